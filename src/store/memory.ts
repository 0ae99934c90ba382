import type { Message } from '../codec/message.ts'
import type { SessionRecord, Store } from './types.ts'

/** Keeps everything in process memory: fast, and gone when the process ends. */
export class MemoryStore implements Store {
  readonly kind = 'memory'
  #retained = new Map<string, Message>()
  #sessions = new Map<string, SessionRecord>()

  async open(): Promise<void> {}
  async close(): Promise<void> {}

  getRetained(topic: string): Message | undefined {
    return this.#retained.get(topic)
  }

  setRetained(msg: Message): void {
    this.#retained.set(msg.topic, msg)
  }

  deleteRetained(topic: string): void {
    this.#retained.delete(topic)
  }

  retainedCount(): number {
    return this.#retained.size
  }

  allRetained(): Iterable<Message> {
    return this.#retained.values()
  }

  saveSession(rec: SessionRecord): void {
    this.#sessions.set(rec.clientId, structuredClone(rec))
  }

  deleteSession(clientId: string): void {
    this.#sessions.delete(clientId)
  }

  loadSessions(): SessionRecord[] {
    return [...this.#sessions.values()].map((r) => structuredClone(r))
  }
}

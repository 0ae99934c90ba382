import type { Message } from '../codec/message.ts'
import { TopicTree } from '../topic/topic-tree.ts'
import type { SessionRecord, Store } from './types.ts'

/** Keeps everything in process memory: fast, and gone when the process ends. */
export class MemoryStore implements Store {
  readonly kind = 'memory'
  #retained = new TopicTree<Message>()
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

  matchRetained(filter: string, visit: (msg: Message) => void): void {
    this.#retained.match(filter, visit)
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

import type { Message } from '../codec/message.ts'
import { TopicTree } from '../topic/topic-tree.ts'
import { messageSize } from '../session/queue-policy.ts'
import { retainedSize, type OutboxEntry, type QueuedSummary, type Restored, type SessionRecord, type Store } from './types.ts'

/** Keeps everything in process memory: fast, and gone when the process ends. */
export class MemoryStore implements Store {
  readonly kind = 'memory'
  readonly pending = false
  #retained = new TopicTree<Message>()
  #sessions = new Map<string, SessionRecord>()
  #outbox = new Map<string, Map<number, OutboxEntry>>()
  #qos2 = new Map<string, Set<number>>()

  async open(): Promise<void> {}
  async close(): Promise<void> {}
  commit(): number {
    return 0
  }

  #retainedBytes = 0

  retainedBytes(): number {
    return this.#retainedBytes
  }

  getRetained(topic: string): Message | undefined {
    return this.#retained.get(topic)
  }

  setRetained(msg: Message): void {
    const old = this.#retained.get(msg.topic)
    this.#retainedBytes += retainedSize(msg) - (old === undefined ? 0 : retainedSize(old))
    this.#retained.set(msg.topic, msg)
  }

  deleteRetained(topic: string): void {
    const old = this.#retained.get(topic)
    if (old !== undefined) this.#retainedBytes -= retainedSize(old)
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
    this.#sessions.set(rec.clientId, { ...rec, subscriptions: rec.subscriptions.map((s) => ({ ...s })) })
  }

  deleteSession(clientId: string): void {
    this.#sessions.delete(clientId)
    this.#outbox.delete(clientId)
    this.#qos2.delete(clientId)
  }

  putOutbox(clientId: string, entry: OutboxEntry): void {
    let m = this.#outbox.get(clientId)
    if (m === undefined) this.#outbox.set(clientId, (m = new Map()))
    m.set(entry.seq, { ...entry })
  }

  removeOutbox(clientId: string, seq: number): void {
    this.#outbox.get(clientId)?.delete(seq)
  }

  pageQueued(clientId: string, afterSeq: number, limit: number): OutboxEntry[] {
    const m = this.#outbox.get(clientId)
    if (m === undefined) return []
    const out: OutboxEntry[] = []
    for (const e of m.values()) if (e.state === 'queued' && e.seq > afterSeq) out.push(e)
    return out.sort((a, b) => a.seq - b.seq).slice(0, limit).map((e) => ({ ...e }))
  }

  addInboundQos2(clientId: string, packetId: number): void {
    let s = this.#qos2.get(clientId)
    if (s === undefined) this.#qos2.set(clientId, (s = new Set()))
    s.add(packetId)
  }

  removeInboundQos2(clientId: string, packetId: number): void {
    this.#qos2.get(clientId)?.delete(packetId)
  }

  load(): Restored {
    const outbox = new Map<string, OutboxEntry[]>()
    const queued = new Map<string, QueuedSummary>()
    for (const [id, m] of this.#outbox) {
      const sent: OutboxEntry[] = []
      let count = 0, bytes = 0, lastSeq = 0
      for (const e of m.values()) {
        if (e.state !== 'queued') { sent.push({ ...e }); continue }
        count++
        bytes += messageSize(e.delivery.msg)
        if (e.seq > lastSeq) lastSeq = e.seq
      }
      if (sent.length > 0) outbox.set(id, sent.sort((a, b) => a.seq - b.seq))
      if (count > 0) queued.set(id, { count, bytes, lastSeq })
    }
    const inboundQos2 = new Map<string, number[]>()
    for (const [id, s] of this.#qos2) if (s.size > 0) inboundQos2.set(id, [...s].sort((a, b) => a - b))
    return {
      sessions: [...this.#sessions.values()].map((r) => ({ ...r, subscriptions: r.subscriptions.map((s) => ({ ...s })) })),
      outbox,
      queued,
      inboundQos2,
    }
  }
}

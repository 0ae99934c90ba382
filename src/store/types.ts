import type { Message } from '../codec/message.ts'
import type { Delivery, Subscription, Will } from '../session/types.ts'

/** What survives of a persistent session between connections and restarts. */
export interface SessionRecord {
  clientId: string
  /** The username that made the session (undefined: an anonymous client). */
  owner?: string | undefined
  version: 3 | 4 | 5
  expiryInterval: number
  /** Wall-clock ms of the disconnect; 0 while the client was connected. */
  disconnectedAt: number
  subscriptions: Subscription[]
  /** The will of the live connection, or the pending delayed will. */
  will: Will | null
  /** When a pending delayed will is due (ms); 0 when the will belongs to a live connection. */
  willAt: number
}

/** One message of a session's outbox: queued (packetId 0) or inflight. */
export interface OutboxEntry {
  seq: number
  delivery: Delivery
  packetId: number
  state: 'queued' | 'publish' | 'pubrel'
}

/** The queued (not yet sent) part of one session's outbox, summed up without reading it. */
export interface QueuedSummary {
  count: number
  /** Topic and payload bytes of the queued messages. */
  bytes: number
  /** Highest seq of a queued entry. */
  lastSeq: number
}

/** Everything a store restores at start, besides retained messages. Queued messages are not
 * read here (a long offline queue stays in the store): pageQueued reads them when needed. */
export interface Restored {
  sessions: SessionRecord[]
  /** Per client id, the inflight entries (sent, unacknowledged: state publish or pubrel), ordered by seq. */
  outbox: Map<string, OutboxEntry[]>
  /** Per client id, the queued entries' count and size. */
  queued: Map<string, QueuedSummary>
  /** Per client id, inbound QoS 2 packet ids awaiting PUBREL. */
  inboundQos2: Map<string, number[]>
}

/**
 * The one storage interface. The broker keeps the live state in memory and writes through
 * to the store. Writes are buffered; commit() makes every write since the last commit durable
 * in one transaction (group commit). Both implementations run test/contracts/store.contract.ts.
 */
export interface Store {
  readonly kind: 'memory' | 'sqlite'
  open(): Promise<void>
  close(): Promise<void>

  getRetained(topic: string): Message | undefined
  setRetained(msg: Message): void
  deleteRetained(topic: string): void
  retainedCount(): number
  /** Bytes of the retained messages (retainedSize of each), for limits.maxRetainedBytes. */
  retainedBytes(): number
  allRetained(): Iterable<Message>
  /** Visits the retained messages whose topics match a filter. */
  matchRetained(filter: string, visit: (msg: Message) => void): void

  saveSession(rec: SessionRecord): void
  /** Removes a session with its outbox and QoS 2 state. */
  deleteSession(clientId: string): void

  /** Inserts or replaces the outbox entry (clientId, entry.seq). */
  putOutbox(clientId: string, entry: OutboxEntry): void
  removeOutbox(clientId: string, seq: number): void
  /**
   * Up to `limit` queued entries (state 'queued') of one session with seq > afterSeq, in seq
   * order, including queued entries written since the last commit (an entry removed since then
   * may still be returned: the broker reads an entry before it removes it). Throws StoreError
   * when the store cannot be read.
   */
  pageQueued(clientId: string, afterSeq: number, limit: number): OutboxEntry[]
  addInboundQos2(clientId: string, packetId: number): void
  removeInboundQos2(clientId: string, packetId: number): void

  load(): Restored

  /** True when writes wait for commit(). */
  readonly pending: boolean
  /**
   * Makes the buffered writes durable in one transaction. Returns how many writes had to be
   * dropped because the store is full (0 = all durable). Throws StoreError when the transaction
   * itself failed; the writes then stay buffered and a later commit retries them.
   */
  commit(): number
}

/**
 * What a retained message counts for limits.maxRetainedBytes, in bytes: its topic (UTF-8), its
 * payload, and its MQTT 5 properties as they are encoded (identifier, length and value; user
 * properties exactly as received; 5 bytes for a Message Expiry Interval).
 */
export function retainedSize(msg: Message): number {
  let n = Buffer.byteLength(msg.topic, 'utf8') + msg.payload.length
  const p = msg.props
  if (p !== null) {
    if (p.payloadFormatIndicator !== undefined) n += 2
    if (p.contentType !== undefined) n += 3 + Buffer.byteLength(p.contentType, 'utf8')
    if (p.responseTopic !== undefined) n += 3 + Buffer.byteLength(p.responseTopic, 'utf8')
    if (p.correlationData !== undefined) n += 3 + p.correlationData.length
    if (p.userProps !== undefined) n += p.userProps.length
  }
  if (msg.expiresAt > 0) n += 5
  return n
}

/** A storage failure, with the reason code publishers should see. */
export class StoreError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.code = code
    this.name = 'StoreError'
  }
}

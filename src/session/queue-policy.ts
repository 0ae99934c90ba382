import type { Message } from '../codec/message.ts'

/** Why a message was dropped: counted per reason ($SYS, admin stats) and logged per session. */
export const DROP_REASONS = [
  /** drop-oldest: the oldest queued message made room (message count bound). */
  'queue-full-oldest',
  /** drop-oldest: the oldest queued message made room (byte bound). */
  'queue-bytes-oldest',
  /** drop-new (or a message that cannot be queued under refuse): the new message, count bound. */
  'queue-full-new',
  /** The same, byte bound. */
  'queue-bytes-new',
  /** refuse: a QoS 0 message for a full queue (QoS 0 is never refused to its publisher). */
  'queue-full-qos0',
  /** refuse: a message for the full queue of a session that ends with its connection (Session
   * Expiry 0, MQTT 3 clean session), message count bound: such a queue never refuses publishers. */
  'queue-full-transient',
  /** The same, byte bound. */
  'queue-bytes-transient',
  /** A queued or unacknowledged message its client may no longer read (ACL), not sent on. */
  'acl-read',
  /** A QoS 0 message to a connected client with too much unsent output. */
  'qos0-slow-consumer',
  /** Message Expiry Interval passed while the message waited. */
  'expired',
  /** Larger than the client's Maximum Packet Size [MQTT-3.1.2-25]. */
  'too-large',
  /** Memory above the budget (limits.memory): a QoS 0 message to a slow consumer, or the oldest
   * message of a large offline queue. */
  'memory',
] as const

export type DropReason = typeof DROP_REASONS[number]
export type DropCounters = Record<DropReason, number>

export function dropCounters(): DropCounters {
  const c = {} as DropCounters
  for (const r of DROP_REASONS) c[r] = 0
  return c
}

export type QueueOverflow = 'drop-oldest' | 'drop-new' | 'refuse'

/** How sessions' queues behave (from config), and the counters their drops add to. */
export interface QueuePolicy {
  /** Bounds of a persistent session's queue with a durable store (it lives in the store). */
  maxQueued: number
  maxQueuedBytes: number
  /** Bounds of a queue held in memory: memory store, or a session that ends with its connection. */
  maxQueuedMem: number
  maxQueuedBytesMem: number
  /** QoS 0 messages are queued for offline sessions too. */
  queueQos0: boolean
  overflow: QueueOverflow
  counters: { dropped: number; refused: number }
  drops: DropCounters
  warn(msg: string, fields: Record<string, unknown>): void
}

export const DEFAULT_POLICY: QueuePolicy = {
  maxQueued: 1000, maxQueuedBytes: Infinity, maxQueuedMem: 1000, maxQueuedBytesMem: Infinity, queueQos0: false,
  overflow: 'drop-oldest', counters: { dropped: 0, refused: 0 }, drops: dropCounters(), warn: () => {},
}

/** Drops and refusals of one session since its last log line. */
export interface DropLog {
  dropped: number
  refused: number
  reasons: Partial<DropCounters>
  /** When the last line was written (ms). */
  at: number
}

/** What a queued message counts against limits.maxQueuedBytes: topic (UTF-8 bytes, as the
 * store sums them on restore) and payload. */
export function messageSize(m: Message): number {
  return Buffer.byteLength(m.topic) + m.payload.length
}

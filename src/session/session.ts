import type { Store } from '../store/types.ts'
import type { Delivery, Inflight, Subscription, Will } from './types.ts'

/**
 * The state the broker keeps for one client id: subscriptions, inflight window, offline
 * queue, QoS 2 receive state. It holds no socket; a connection attaches to it.
 */
export class Session {
  readonly clientId: string
  version: 3 | 4 | 5
  /** Session Expiry Interval in seconds; 0xFFFFFFFF = never. */
  expiryInterval = 0
  /** Wall-clock ms when the client went away; 0 while connected. */
  disconnectedAt = 0
  readonly subscriptions = new Map<string, Subscription>()
  /** Outbound QoS 1/2 messages awaiting acknowledgement, in send order. */
  readonly inflight = new Map<number, Inflight>()
  /** Deliveries waiting for the client or for room in the inflight window. */
  queue: Delivery[] = []
  /** Inbound QoS 2 packet ids that got PUBREC and await PUBREL (created on first use). */
  #qos2: Set<number> | null = null
  /** A will waiting for its Will Delay Interval to pass after the connection ended. */
  pendingWill: Will | null = null
  pendingWillAt = 0
  droppedMessages = 0
  /** Queue policy, set by the broker from config. */
  maxQueued = 1000
  queueQos0 = false
  dropNew = false
  /** Shared counters (the broker's stats), not a per-session object. */
  counters: { dropped: number } = { dropped: 0 }
  /** Where this session's state is written through; null for a session that ends with its
   * connection (expiry 0), which has nothing to persist. */
  store: Store | null = null
  /** Next position in the durable outbox. */
  nextSeq = 1
  #nextId = 1

  constructor(clientId: string, version: 3 | 4 | 5) {
    this.clientId = clientId
    this.version = version
  }

  hasQos2(id: number): boolean {
    return this.#qos2 !== null && this.#qos2.has(id)
  }

  addQos2(id: number): void {
    (this.#qos2 ??= new Set()).add(id)
  }

  deleteQos2(id: number): boolean {
    return this.#qos2 !== null && this.#qos2.delete(id)
  }

  /** A free packet id for an outbound message, or 0 when all 65535 are in use. */
  nextPacketId(): number {
    if (this.inflight.size >= 65535) return 0
    for (;;) {
      const id = this.#nextId
      this.#nextId = id === 65535 ? 1 : id + 1
      if (!this.inflight.has(id)) return id
    }
  }

  /** Wall-clock ms at which this disconnected session expires, or Infinity. */
  expiresAt(): number {
    if (this.disconnectedAt === 0 || this.expiryInterval === 0xffffffff) return Infinity
    return this.disconnectedAt + this.expiryInterval * 1000
  }
}

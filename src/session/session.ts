import type { Connection } from '../broker/connection.ts'
import type { Reader } from '../broker/read-access.ts'
import type { Store } from '../store/types.ts'
import type { Delivery, Inflight, Subscription, Will } from './types.ts'

/** How a session's offline queue behaves (from config), and the counter its drops add to. */
export interface QueuePolicy {
  maxQueued: number
  /** QoS 0 messages are queued for offline sessions too. */
  queueQos0: boolean
  /** A full queue drops the new message (else the oldest). */
  dropNew: boolean
  counters: { dropped: number }
}

const DEFAULT_POLICY: QueuePolicy = { maxQueued: 1000, queueQos0: false, dropNew: false, counters: { dropped: 0 } }

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
  /** The connection attached to this session while the client is online. */
  connection: Connection | null = null
  /** Subscriptions by raw filter: the first inline, a Map only from the second on (an idle
   * client with one subscription is the common case; a one-entry Map costs ~260 B). */
  #sub1: Subscription | null = null
  #subs: Map<string, Subscription> | null = null
  /** Created on first use: an idle client has neither inflight messages nor a queue. */
  #inflight: Map<number, Inflight> | null = null
  #queue: Delivery[] | null = null
  /** Inbound QoS 2 packet ids that got PUBREC and await PUBREL (created on first use). */
  #qos2: Set<number> | null = null
  /** A will waiting for its Will Delay Interval to pass after the connection ended. */
  pendingWill: Will | null = null
  pendingWillAt = 0
  /** Queue policy and counters, one object shared by the broker's sessions. */
  policy: QueuePolicy = DEFAULT_POLICY
  /** Where this session's state is written through; null for a session that ends with its
   * connection (expiry 0), which has nothing to persist. */
  store: Store | null = null
  /** The username of the client that made the session (undefined: anonymous); only that user
   * may resume or replace it unless session.takeoverAcrossUsers is on (broker/ownership.ts). */
  owner: string | undefined = undefined
  /** Next position in the durable outbox. */
  nextSeq = 1
  /** Who reads this session's messages when an ACL restricts its client (kept while it is
   * offline, so queued messages are checked too); null: no read checks (read-access.ts). */
  reader: Reader | null = null
  #nextId = 1

  constructor(clientId: string, version: 3 | 4 | 5) {
    this.clientId = clientId
    this.version = version
  }

  /** Outbound QoS 1/2 messages awaiting acknowledgement, in send order. */
  get inflight(): Map<number, Inflight> {
    return this.#inflight ??= new Map()
  }

  /** Deliveries waiting for the client or for room in the inflight window. */
  get queue(): Delivery[] {
    return this.#queue ??= []
  }

  set queue(q: Delivery[]) {
    this.#queue = q
  }

  /** Size of the queue, without creating it. */
  get queuedCount(): number {
    return this.#queue === null ? 0 : this.#queue.length
  }

  /** Size of the inflight window, without creating it. */
  get inflightCount(): number {
    return this.#inflight === null ? 0 : this.#inflight.size
  }

  getSubscription(raw: string): Subscription | undefined {
    if (this.#subs !== null) return this.#subs.get(raw)
    return this.#sub1 !== null && this.#sub1.raw === raw ? this.#sub1 : undefined
  }

  /** Adds or replaces the subscription with this raw filter. */
  setSubscription(sub: Subscription): void {
    if (this.#subs !== null) this.#subs.set(sub.raw, sub)
    else if (this.#sub1 === null || this.#sub1.raw === sub.raw) this.#sub1 = sub
    else {
      this.#subs = new Map([[this.#sub1.raw, this.#sub1], [sub.raw, sub]])
      this.#sub1 = null
    }
  }

  deleteSubscription(raw: string): boolean {
    if (this.#subs !== null) return this.#subs.delete(raw)
    if (this.#sub1 === null || this.#sub1.raw !== raw) return false
    this.#sub1 = null
    return true
  }

  get subscriptionCount(): number {
    return this.#subs !== null ? this.#subs.size : this.#sub1 !== null ? 1 : 0
  }

  /** A snapshot of the subscriptions, in the order they were made. */
  subscriptionList(): Subscription[] {
    if (this.#subs !== null) return [...this.#subs.values()]
    return this.#sub1 !== null ? [this.#sub1] : []
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
    const inflight = this.inflight
    if (inflight.size >= 65535) return 0
    for (;;) {
      const id = this.#nextId
      this.#nextId = id === 65535 ? 1 : id + 1
      if (!inflight.has(id)) return id
    }
  }

  /** Wall-clock ms at which this disconnected session expires, or Infinity. */
  expiresAt(): number {
    if (this.disconnectedAt === 0 || this.expiryInterval === 0xffffffff) return Infinity
    return this.disconnectedAt + this.expiryInterval * 1000
  }
}

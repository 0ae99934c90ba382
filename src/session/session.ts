import type { Connection } from '../broker/connection.ts'
import type { Reader } from '../broker/read-access.ts'
import type { Store } from '../store/types.ts'
import { DEFAULT_POLICY, messageSize, type DropLog, type QueuePolicy } from './queue-policy.ts'
import type { Delivery, Inflight, Subscription, Will } from './types.ts'

/** Queued entries read back from the store at a time for a connected client. */
const PAGE = 256
/** For a client that is away (only to look at or drop the front of a full queue; the page is
 * released again at once, queue.ts): a few entries. */
const AWAY_PAGE = 16

/** A session's queue beyond its in-memory head (created with the first queued message or drop). */
interface QueueState {
  /** Bytes of every queued message, in memory or only in the store. */
  bytes: number
  /** Queued entries that live only in the store: those with seq > afterSeq (state queued). */
  spilled: number
  spilledBytes: number
  afterSeq: number
  dropLog: DropLog | null
}

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
  /** The in-memory head of the queue; with a store, the rest may live only there (#spill). */
  #queue: Delivery[] | null = null
  /** Queue bytes, the part in the store only, the drop log: one field while none of it is used. */
  #qs: QueueState | null = null
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

  /** The in-memory head of the queue: deliveries waiting for the client or for room in the
   * inflight window. The rest of a long queue of a persistent session is in the store. */
  get queue(): Delivery[] {
    return this.#queue ??= []
  }

  /** Replaces the in-memory head (after filtering it); queuedBytes follows. */
  set queue(q: Delivery[]) {
    const qs = this.#state()
    let bytes = qs.spilledBytes
    for (let i = 0; i < q.length; i++) bytes += messageSize(q[i]!.msg)
    this.#queue = q
    qs.bytes = bytes
  }

  /** Size of the queue (in memory and in the store), without creating it. */
  get queuedCount(): number {
    return (this.#queue === null ? 0 : this.#queue.length) + (this.#qs === null ? 0 : this.#qs.spilled)
  }

  /** Bytes (topic + payload) of every queued message, in memory or only in the store. */
  get queuedBytes(): number {
    return this.#qs === null ? 0 : this.#qs.bytes
  }

  /** Queued messages held in memory. */
  get headCount(): number {
    return this.#queue === null ? 0 : this.#queue.length
  }

  /** Bytes of the queued messages held in memory (what a memory budget counts). */
  get headBytes(): number {
    return this.#qs === null ? 0 : this.#qs.bytes - this.#qs.spilledBytes
  }

  /** Queued messages that live only in the store. */
  get spilledCount(): number {
    return this.#qs === null ? 0 : this.#qs.spilled
  }

  /** Drops and refusals not yet logged (null before the first one). */
  get dropLog(): DropLog | null {
    return this.#qs === null ? null : this.#qs.dropLog
  }

  /** The drop log, created on first use. */
  openDropLog(): DropLog {
    return this.#state().dropLog ??= { dropped: 0, refused: 0, reasons: {}, at: 0 }
  }

  #state(): QueueState {
    return this.#qs ??= { bytes: 0, spilled: 0, spilledBytes: 0, afterSeq: 0, dropLog: null }
  }

  /** Appends a delivery to the in-memory head (only while nothing is spilled). */
  pushQueued(d: Delivery, size: number): void {
    this.queue.push(d)
    this.#state().bytes += size
  }

  /** Counts a delivery written to the store only (d.seq set), after the in-memory head. */
  spillQueued(seq: number, size: number): void {
    const qs = this.#state()
    if (qs.spilled === 0) qs.afterSeq = seq - 1
    qs.spilled++
    qs.spilledBytes += size
    qs.bytes += size
  }

  /** Restored at start: the queue is in the store only. */
  restoreSpill(count: number, bytes: number): void {
    if (count === 0) return
    const qs = this.#state()
    qs.spilled = count
    qs.spilledBytes = bytes
    qs.bytes += bytes
    qs.afterSeq = 0
  }

  /** Moves the in-memory head back to the store only (its entries are all written there): a
   * client that is away has nothing of its queue in memory. */
  evictHead(): void {
    const q = this.#queue
    if (q === null || q.length === 0 || this.store === null) return
    const first = q[0]!.seq
    if (!first) return
    const qs = this.#state()
    qs.afterSeq = first - 1
    qs.spilled += q.length
    qs.spilledBytes = qs.bytes
    this.#queue = null
  }

  /**
   * Takes the oldest queued delivery, reading the next page from the store when the in-memory
   * head is empty. Undefined when the queue is empty, or when the store cannot be read now
   * (the entries stay counted and are read on a later try).
   */
  shiftQueued(): Delivery | undefined {
    const q = this.#front()
    if (q === null) return undefined
    const d = q.shift()!
    this.#qs!.bytes -= messageSize(d.msg)
    return d
  }

  /** The oldest queued delivery, left in place (read from the store like shiftQueued). */
  peekQueued(): Delivery | undefined {
    return this.#front()?.[0]
  }

  /** The in-memory head with at least one delivery (a page read when needed), or null. */
  #front(): Delivery[] | null {
    let q = this.#queue
    if ((q === null || q.length === 0) && this.#qs !== null && this.#qs.spilled > 0) q = this.#readPage(this.#qs, this.connection === null ? AWAY_PAGE : PAGE)
    return q === null || q.length === 0 ? null : q
  }

  #readPage(qs: QueueState, limit: number): Delivery[] | null {
    const store = this.store
    let page
    try {
      page = store === null ? [] : store.pageQueued(this.clientId, qs.afterSeq, limit)
    } catch {
      return this.#queue
    }
    const q = this.queue
    for (const e of page) {
      q.push(e.delivery)
      qs.afterSeq = e.seq
      qs.spilledBytes -= messageSize(e.delivery.msg)
    }
    qs.spilled -= page.length
    if (page.length === 0 || qs.spilled <= 0) {
      // all read back (or the store has fewer entries than counted): forget any difference
      qs.bytes -= qs.spilledBytes
      qs.spilled = 0
      qs.spilledBytes = 0
    }
    return q
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

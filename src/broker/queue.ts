import type { Message } from '../codec/message.ts'
import { compactMessage } from '../codec/slab.ts'
import { messageSize, type DropReason, type QueuePolicy } from '../session/queue-policy.ts'
import type { Session } from '../session/session.ts'
import type { Delivery, Subscription } from '../session/types.ts'
import type { Connection } from './connection.ts'

/**
 * Session queues and their bounds (limits.maxQueuedMessages / maxQueuedBytes, the
 * session.queueOverflow policy). A persistent session's queue with the SQLite store lives in
 * the outbox table: at most a small head is kept in memory while its client is connected, and
 * none while it is away (a few entries read to look at a full queue's front are released at
 * once); the rest is read back in pages as the inflight window drains.
 */

/** In-memory head of a persistent session's queue with a durable store: messages, bytes. */
const HEAD_MAX = 1000
const HEAD_BYTES = 4 * 1024 * 1024
/** One warn line per session at most this often for its drops and refusals. */
const DROP_LOG_MS = 60_000

/** The inflight window towards this connection: its Receive Maximum capped by our config. */
export function window(conn: Connection): number {
  return Math.min(conn.clientReceiveMaximum, conn.broker.config.limits.maxInflight)
}

/** Writes a delivery to the session's durable outbox (persistent sessions only). */
export function persist(session: Session, d: Delivery, packetId: number, state: 'queued' | 'publish' | 'pubrel'): void {
  const store = session.store
  if (store === null) return
  if (!d.seq) d.seq = session.nextSeq++
  store.putOutbox(session.clientId, { seq: d.seq, delivery: d, packetId, state })
}

/** Removes a delivery from the durable outbox once it is done with. */
export function unpersist(session: Session, d: Delivery): void {
  if (session.store !== null && d.seq) session.store.removeOutbox(session.clientId, d.seq)
}

/** Queues a delivery, within the session's bounds and by the overflow policy. */
export function enqueue(s: Session, d: Delivery): void {
  const p = s.policy
  const size = messageSize(d.msg)
  const durable = s.store !== null
  if (!fits(s, p, durable, size) && !makeRoom(s, p, durable, d, size)) return
  if (durable && (s.connection === null || s.spilledCount > 0 || s.headCount >= HEAD_MAX || s.headBytes >= HEAD_BYTES)) {
    // only in the store: read back in pages (Session.shiftQueued)
    persist(s, d, 0, 'queued')
    s.spillQueued(d.seq!, size)
    return
  }
  // a queued message may wait long: not as a view that holds a whole slab or read buffer
  compactMessage(d.msg)
  s.pushQueued(d, size)
  persist(s, d, 0, 'queued')
}

function fits(s: Session, p: QueuePolicy, durable: boolean, size: number): boolean {
  const n = s.queuedCount
  // a message larger than the byte bound is still queued into an empty queue
  return n < (durable ? p.maxQueued : p.maxQueuedMem) && (n === 0 || s.queuedBytes + size <= (durable ? p.maxQueuedBytes : p.maxQueuedBytesMem))
}

/**
 * Drops the expired messages at the front of a full queue (the part in the store is swept only
 * as it is read back: messages usually expire in the order they were queued).
 */
function dropExpiredFront(s: Session): void {
  const now = Date.now()
  for (let d = s.peekQueued(); d !== undefined && d.msg.expiresAt > 0 && d.msg.expiresAt <= now; d = s.peekQueued()) {
    s.shiftQueued()
    unpersist(s, d)
    countDrop(s.policy, 'expired')
  }
}

/** A full queue: drop-oldest drops from its head until the new message fits; else it is dropped. */
function makeRoom(s: Session, p: QueuePolicy, durable: boolean, d: Delivery, size: number): boolean {
  const ok = dropToFit(s, p, durable, d, size)
  // an away client's queue stays in the store: the few entries read to find its front go again
  if (s.connection === null) s.evictHead()
  return ok
}

function dropToFit(s: Session, p: QueuePolicy, durable: boolean, d: Delivery, size: number): boolean {
  dropExpiredFront(s)
  if (fits(s, p, durable, size)) return true
  const byCount = s.queuedCount >= (durable ? p.maxQueued : p.maxQueuedMem)
  if (p.overflow === 'drop-oldest') {
    while (s.queuedCount > 0 && !fits(s, p, durable, size)) {
      const old = s.shiftQueued()
      if (old === undefined) break
      unpersist(s, old)
      noteDrop(s, byCount ? 'queue-full-oldest' : 'queue-bytes-oldest')
    }
    if (fits(s, p, durable, size)) return true
  }
  noteDrop(s, p.overflow !== 'refuse' ? (byCount ? 'queue-full-new' : 'queue-bytes-new')
    : d.qos === 0 ? 'queue-full-qos0'
    // a session that ends with its connection never refuses publishers (roomForAll): its
    // messages die with it anyway
    : s.expiryInterval === 0 ? (byCount ? 'queue-full-transient' : 'queue-bytes-transient')
    : byCount ? 'queue-full-new' : 'queue-bytes-new')
  return false
}

/** Under refuse: a QoS 1/2 delivery of this size would be sent or queued, not dropped. */
function hasRoom(s: Session, size: number): boolean {
  const conn = s.connection
  if (conn !== null && s.queuedCount === 0 && s.inflightCount < window(conn)) return true
  const durable = s.store !== null
  if (fits(s, s.policy, durable, size)) return true
  dropExpiredFront(s)
  if (conn === null) s.evictHead()
  return fits(s, s.policy, durable, size)
}

/**
 * Under session.queueOverflow=refuse: every persistent session (Session Expiry > 0) a QoS 1/2
 * message would be queued for has room (a shared group: one member), so it is delivered to all
 * of them or to none. A session that ends with its connection never refuses: its full queue
 * drops the message (queue-full-transient), which would die with its connection anyway; so one
 * client that never acknowledges cannot stop publishing for everyone. A shared group refuses
 * only when no member has room and one of them is persistent. A refused message is counted and
 * logged on the session that had no room.
 */
export function roomForAll(sessions: Map<string, Session>, list: Subscription[], readable: Uint8Array | null, msg: Message): boolean {
  let size = -1
  // per group: null = a member has room; a Session = a full persistent member; false = only
  // full members that end with their connection so far
  let groups: Map<string, Session | null | false> | null = null
  for (let i = 0; i < list.length; i++) {
    const sub = list[i]!
    // a subscriber that may not read the topic gets nothing: its queue cannot refuse the message
    if (sub.qos === 0 || (readable !== null && readable[i] === 0)) continue
    const s = sessions.get(sub.clientId)
    if (s === undefined) continue
    if (sub.group === null) {
      if (s.expiryInterval === 0 || (sub.noLocal && sub.clientId === msg.origin)) continue
      if (size < 0) size = messageSize(msg)
      if (!hasRoom(s, size)) { noteRefused(s); return false }
      continue
    }
    groups ??= new Map()
    const key = `${sub.group}\u0000${sub.filter}`
    const seen = groups.get(key)
    if (seen === null) continue
    if (size < 0) size = messageSize(msg)
    if (hasRoom(s, size)) groups.set(key, null)
    else if (s.expiryInterval > 0) groups.set(key, s)
    else if (seen === undefined) groups.set(key, false)
  }
  if (groups !== null) for (const full of groups.values()) if (full !== null && full !== false) { noteRefused(full); return false }
  return true
}

/** Under refuse: the members of a shared group with room for a QoS 1/2 message (all when none has). */
export function membersWithRoom(sessions: Map<string, Session>, members: Subscription[], msg: Message): Subscription[] {
  const size = messageSize(msg)
  const ok = members.filter((m) => { const s = sessions.get(m.clientId); return s !== undefined && hasRoom(s, size) })
  return ok.length > 0 ? ok : members
}

/** Counts a dropped message by reason (no log line: expiry and oversize are the client's choice). */
export function countDrop(p: QueuePolicy, reason: DropReason): void {
  p.counters.dropped++
  p.drops[reason]++
}

/** Counts a dropped message and logs it for its session, at most once a minute. */
export function noteDrop(s: Session, reason: DropReason): void {
  countDrop(s.policy, reason)
  const log = s.openDropLog()
  log.dropped++
  log.reasons[reason] = (log.reasons[reason] ?? 0) + 1
  flushDropLog(s, Date.now())
}

function noteRefused(s: Session): void {
  s.policy.counters.refused++
  const log = s.openDropLog()
  log.refused++
  flushDropLog(s, Date.now())
}

/** Writes the session's drop line when there is something to say and the last is a minute old. */
export function flushDropLog(s: Session, now: number): void {
  const log = s.dropLog
  if (log === null || (log.dropped === 0 && log.refused === 0) || now - log.at < DROP_LOG_MS) return
  const p = s.policy
  s.policy.warn(log.dropped > 0 ? 'queue limit: messages dropped' : 'queue limit: publishes refused', {
    clientId: s.clientId, dropped: log.dropped, refused: log.refused, reasons: log.reasons,
    queued: s.queuedCount, queuedBytes: s.queuedBytes, policy: p.overflow, since: log.at === 0 ? undefined : new Date(log.at).toISOString(),
  })
  log.dropped = 0
  log.refused = 0
  log.reasons = {}
  log.at = now
}

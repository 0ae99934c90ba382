import type { QoS } from 'mqtt-packet'
import type { Message } from '../codec/message.ts'
import { encodePublish } from '../codec/publish.ts'
import type { Session } from '../session/session.ts'
import type { Delivery } from '../session/types.ts'
import type { Connection } from './connection.ts'
import { qos0DropBytes } from './limits.ts'
import { mayRead } from './read-access.ts'
import { countDrop, enqueue, noteDrop, persist, unpersist, window } from './queue.ts'

export function isExpired(d: Delivery, now: number): boolean {
  return d.msg.expiresAt > 0 && d.msg.expiresAt <= now
}

/**
 * Hands a delivery to a session: sent at once when its client is online and the window has
 * room, queued otherwise (for QoS > 0, or QoS 0 when configured), dropped when the queue is full.
 */
export function deliver(session: Session, conn: Connection | undefined, d: Delivery): void {
  if (conn !== undefined) {
    if (d.qos === 0) {
      sendQos0(conn, d.msg, d.retain, d.subIds)
      return
    }
    if (session.queuedCount === 0 && session.inflight.size < window(conn)) {
      sendInflight(conn, session, d)
      return
    }
  } else if (d.qos === 0 && !session.policy.queueQos0) {
    return
  }
  enqueue(session, d)
}

/** A QoS 0 message to a connected client: written now, or dropped for a slow consumer. */
export function sendQos0(conn: Connection, msg: Message, retain: boolean, subIds: number[] | null): void {
  // a slow consumer loses QoS 0 messages beyond a quarter of limits.maxPendingBytes (it is
  // disconnected only when QoS 1/2 output takes it past the whole cap, connection.ts)
  if (conn.pendingBytes > qos0DropBytes(conn.broker.config.limits.maxPendingBytes)) { noteDrop(conn.session!, 'qos0-slow-consumer'); return }
  // near the memory budget, QoS 0 to a client whose socket did not take its earlier output is dropped
  if (conn.backlogBytes > 0 && conn.broker.memory.pressure) { conn.broker.memory.droppedQos0(conn); return }
  writePublish(conn, msg, 0, retain, subIds, 0, false)
}

/** Assigns a packet id, records the message as inflight and sends it. */
function sendInflight(conn: Connection, session: Session, d: Delivery): void {
  const id = session.nextPacketId()
  if (id === 0) { enqueue(session, d); return }
  session.inflight.set(id, { packetId: id, delivery: d, state: 'publish' })
  if (writePublish(conn, d.msg, d.qos, d.retain, d.subIds, id, false)) persist(session, d, id, 'publish')
  else { session.inflight.delete(id); unpersist(session, d) }
}

/** Moves queued deliveries into the inflight window while there is room. */
export function drainQueue(conn: Connection, session: Session): void {
  if (session.queuedCount === 0) return
  const now = Date.now()
  const win = window(conn)
  while (session.queuedCount > 0 && session.inflight.size < win) {
    // the next page comes from the store when the in-memory head is empty (queue.ts)
    const d = session.shiftQueued()
    if (d === undefined) break
    if (isExpired(d, now)) { unpersist(session, d); countDrop(session.policy, 'expired'); continue }
    // no longer readable by this client (another user, or the rules changed)
    if (session.reader !== null && !mayRead(conn.broker, session, d.msg.topic)) { unpersist(session, d); countDrop(session.policy, 'acl-read'); continue }
    if (d.qos === 0) { writePublish(conn, d.msg, 0, d.retain, d.subIds, 0, false); unpersist(session, d) }
    else sendInflight(conn, session, d)
  }
}

/** [MQTT-4.4.0-1] on resumption, resend unacknowledged PUBLISH (DUP=1) and PUBREL in order. */
export function resendInflight(conn: Connection, session: Session): void {
  if (session.inflightCount === 0) return
  for (const f of session.inflight.values()) {
    if (f.state === 'pubrel') conn.send(Buffer.from([0x62, 2, f.packetId >> 8, f.packetId & 0xff]))
    // a message the client may no longer read is not resent (a QoS 2 one past PUBREC was delivered)
    else if (session.reader !== null && !mayRead(conn.broker, session, f.delivery.msg.topic)) {
      session.inflight.delete(f.packetId)
      unpersist(session, f.delivery)
      countDrop(session.policy, 'acl-read')
    } else if (!writePublish(conn, f.delivery.msg, f.delivery.qos, f.delivery.retain, f.delivery.subIds, f.packetId, true)) {
      session.inflight.delete(f.packetId)
      unpersist(session, f.delivery)
    }
  }
}

/**
 * Encodes and queues one PUBLISH. Returns false when it was not sent: expired, or larger than
 * the client's Maximum Packet Size ([MQTT-3.1.2-25] discarded as if delivered).
 */
export function writePublish(conn: Connection, msg: Message, qos: QoS, retain: boolean, subIds: number[] | null, packetId: number, dup: boolean): boolean {
  const now = Date.now()
  let expiry = -1
  if (msg.expiresAt > 0) {
    // [MQTT-3.3.2-6] the Message Expiry Interval sent is the time remaining
    if (msg.expiresAt <= now) { countDrop(conn.session!.policy, 'expired'); return false }
    expiry = Math.ceil((msg.expiresAt - now) / 1000)
  }
  const v5 = conn.v5
  const simple = qos === 0 && expiry < 0 && subIds === null && (!v5 || conn.clientTopicAliasMax === 0)
  if (simple) {
    const key = (v5 ? 2 : 0) | (retain ? 1 : 0)
    let bytes = msg.frameKey === key ? msg.frame : msg.cache?.[key]
    if (bytes === undefined) {
      bytes = encodePublish({ topic: msg.topic, payload: msg.payload, qos: 0, retain, dup: false, packetId: 0, props: msg.props, expiry: -1, topicAlias: 0, subIds: null }, v5)
      msg.cache ??= [undefined, undefined, undefined, undefined]
      msg.cache[key] = bytes
    }
    if (bytes.length > conn.clientMaxPacketSize) { countDrop(conn.session!.policy, 'too-large'); return false }
    conn.broker.stats.msgsOut++
    conn.send(bytes)
    return true
  }
  let topic = msg.topic
  let alias = 0
  if (v5 && conn.clientTopicAliasMax > 0) {
    const aliases = (conn.aliasesOut ??= new Map())
    const known = aliases.get(topic)
    if (known !== undefined) { alias = known; topic = '' }
    else if (aliases.size < conn.clientTopicAliasMax) alias = aliases.size + 1
  }
  const bytes = encodePublish({ topic, payload: msg.payload, qos, retain, dup, packetId, props: v5 ? msg.props : null, expiry: v5 ? expiry : -1, topicAlias: alias, subIds: v5 ? subIds : null }, v5)
  if (bytes.length > conn.clientMaxPacketSize) { countDrop(conn.session!.policy, 'too-large'); return false }
  if (alias > 0 && topic !== '') conn.aliasesOut!.set(topic, alias)
  conn.broker.stats.msgsOut++
  conn.send(bytes)
  return true
}

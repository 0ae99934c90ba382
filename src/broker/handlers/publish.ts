import { encodeAck, PUBACK, PUBREC } from '../../codec/acks.ts'
import type { Message } from '../../codec/message.ts'
import { decodePublish, type InPublish } from '../../codec/publish.ts'
import { frameBuffer } from '../../codec/slab.ts'
import { varintSize, writeVarint } from '../../codec/varint.ts'
import { MqttError, RC } from '../../codec/reason-codes.ts'
import { topicNameError } from '../../topic/validate.ts'
import type { Connection } from '../connection.ts'
import { overPublishRate } from '../limits.ts'
import { mayPublish } from '../read-access.ts'
import { storeRetained } from '../will.ts'
import { identity } from '../../auth/audit.ts'

const utf8 = new TextDecoder('utf-8', { fatal: true })
const scratch: InPublish = { topic: '', packetId: 0, qos: 0, retain: false, dup: false, payload: Buffer.alloc(0), props: null, expiry: -1, topicAlias: 0 }

/** PUBLISH from a client: checks, topic alias, retained store, routing, acknowledgement. */
export function handlePublish(conn: Connection, header: number, buf: Buffer, start: number, end: number, owned = false): void {
  const broker = conn.broker
  const lim = broker.config.limits
  // limits.publishRate / publishBytesRate: v5 DISCONNECT 0x96 / 0x97, v3 closed
  if (overPublishRate(conn, end - start)) return
  const frame = ownFrame(header, buf, start, end, owned)
  // one decode target for every PUBLISH: nothing below keeps `p` past this call
  const p = decodePublish(header, frame, conn.v5, true, frame.length - (end - start), scratch, lim.maxUserProperties)
  const s = conn.session!
  // [MQTT-3.2.2-11] QoS above Maximum QoS is a protocol violation (0x9B)
  if (p.qos > lim.maxQos) throw new MqttError(RC.QOS_NOT_SUPPORTED, `QoS ${p.qos} not supported`)
  // [MQTT-3.2.2-14] retain when Retain Available is 0 (0x9A)
  if (p.retain && !lim.retainAvailable) throw new MqttError(RC.RETAIN_NOT_SUPPORTED, 'retain not supported')
  let topic = p.topic
  if (p.topicAlias > 0 || (conn.v5 && topic.length === 0)) {
    // 3.3.2.1: a zero-length Topic Name without a Topic Alias is a Protocol Error
    if (p.topicAlias === 0) throw new MqttError(RC.PROTOCOL_ERROR, 'empty topic name without a topic alias')
    // [MQTT-3.3.2-9] [MQTT-3.3.2-10] alias must be 1..Topic Alias Maximum
    if (p.topicAlias > lim.topicAliasMaximum) {
      throw new MqttError(RC.TOPIC_ALIAS_INVALID, `topic alias ${p.topicAlias} outside 1..${lim.topicAliasMaximum}`)
    }
    if (topic.length > 0) (conn.aliasesIn ??= new Map()).set(p.topicAlias, topic)
    else {
      const known = conn.aliasesIn?.get(p.topicAlias)
      if (known === undefined) throw new MqttError(RC.PROTOCOL_ERROR, `unknown topic alias ${p.topicAlias}`)
      topic = known
    }
  }
  const err = topicNameError(topic, broker.topicLimits)
  if (err !== null) throw new MqttError(RC.TOPIC_NAME_INVALID, `invalid topic name: ${err}`)
  if (p.qos === 2 && s.hasQos2(p.packetId)) {
    // [MQTT-4.3.3-10] a resent QoS 2 PUBLISH before PUBREL is not delivered again; its PUBREC
    // waits for the original's commit, and is not sent if that commit failed
    const dupId = p.packetId
    broker.afterCommit(() => { if (s.hasQos2(dupId)) conn.send(encodeAck(PUBREC, dupId, 0, conn.v5)) })
    return
  }
  const sec = broker.security
  // $SYS/ belongs to the broker: a client cannot plant or spoof its values (as in Mosquitto)
  const denied = isSysTopic(topic) || (sec !== null && !mayPublish(sec, conn, topic))
  if (denied) {
    broker.log.debug('publish denied', { clientId: conn.clientId, topic })
    sec?.audit.denied(conn, { ...identity(conn), action: 'publish', topic })
    // v5: PUBACK / PUBREC 0x87 Not authorized; QoS 0 is dropped. v3 has no way to say no: the
    // message is acknowledged as usual and dropped [MQTT-3.3.5-2]
    if (conn.v5) {
      if (p.qos > 0) conn.send(encodeAck(p.qos === 1 ? PUBACK : PUBREC, p.packetId, RC.NOT_AUTHORIZED, true))
      return
    }
  }
  if (p.qos === 1 && conn.v5 && s.hasQos2(p.packetId)) {
    // v5 0x91: the id is held by a QoS 2 flow awaiting PUBREL; the message is not accepted
    conn.send(encodeAck(PUBACK, p.packetId, RC.PACKET_IDENTIFIER_IN_USE, true))
    return
  }
  if (conn.v5 && p.qos > 0 && conn.unackedIn >= lim.receiveMaximum) {
    // [MQTT-3.3.4-7] more QoS 1/2 PUBLISH on this connection without PUBACK / PUBCOMP than
    // our Receive Maximum (the quota is per connection, spec 4.9)
    throw new MqttError(RC.RECEIVE_MAXIMUM_EXCEEDED, `more than ${lim.receiveMaximum} unacknowledged QoS 1/2 messages`)
  }
  if (p.props?.payloadFormatIndicator === 1 && !validUtf8(p.payload)) {
    // [MQTT-3.3.2-4] payload marked as UTF-8 must be UTF-8
    if (p.qos === 0) throw new MqttError(RC.PAYLOAD_FORMAT_INVALID, 'payload is not valid UTF-8')
    conn.send(encodeAck(p.qos === 1 ? PUBACK : PUBREC, p.packetId, RC.PAYLOAD_FORMAT_INVALID, conn.v5))
    return
  }
  // a QoS 0 PUBLISH without alias or expiry goes out to subscribers of the same protocol class
  // exactly as it came in: its bytes are the encoded form, no second encode or copy
  const asIs = p.qos === 0 && p.topicAlias === 0 && p.expiry < 0
  const msg: Message = {
    topic, payload: p.payload, qos: p.qos, retain: p.retain, props: p.props,
    expiresAt: p.expiry >= 0 ? Date.now() + p.expiry * 1000 : 0, origin: conn.clientId,
    frame: asIs ? frame : undefined, frameKey: asIs ? (conn.v5 ? 2 : 0) | (p.retain ? 1 : 0) : -1,
  }
  // `p` is the shared decode target: take what the acknowledgement needs before routing
  const id = p.packetId
  const qos = p.qos
  const n = denied ? 0 : qos > 0 ? broker.publishAcked(msg) : broker.publish(msg)
  if (n < 0) return refuseQuota(conn, qos, id)
  if (msg.retain && !denied) storeRetained(broker, msg)
  if (qos === 0) return
  // v5: 0x10 No matching subscribers is informational
  const reason = n === 0 && conn.v5 ? RC.NO_MATCHING_SUBSCRIBERS : 0
  const type = qos === 1 ? PUBACK : PUBREC
  if (qos === 2) {
    s.addQos2(id)
    if (s.store !== null) s.store.addInboundQos2(s.clientId, id)
  }
  if (broker.commits.idle) {
    // nothing to make durable (memory store, or no persistent subscriber): acknowledge now,
    // without a closure; a QoS 2 message stays counted until PUBCOMP (ack.ts)
    if (qos === 2) conn.unackedIn++
    conn.send(encodeAck(type, id, reason, conn.v5))
    return
  }
  conn.unackedIn++
  // the durability contract: PUBACK / PUBREC only after the message is committed
  broker.afterCommit((r) => {
    // a QoS 2 message stays counted until PUBCOMP (ack.ts), unless its flow ends here
    if (qos === 1 || r !== 'ok') conn.unackedIn--
    if (r === 'ok') return conn.send(encodeAck(type, id, reason, conn.v5))
    if (qos === 2 && s.deleteQos2(id) && s.store !== null) s.store.removeInboundQos2(s.clientId, id)
    // v5: 0x97 tells the publisher the message was not stored; v3 has no such code: close so it resends
    if (conn.v5) conn.send(encodeAck(type, id, RC.QUOTA_EXCEEDED, true))
    else closeToResend(conn, 'storage full')
  })
}

/**
 * session.queueOverflow=refuse and a matching session's queue is full: the message went to no
 * one and is not acknowledged. v5: PUBACK / PUBREC 0x97 (the QoS 2 flow ends); v3 has no such
 * code: the publisher is disconnected and resends it (and what followed it) later.
 */
function refuseQuota(conn: Connection, qos: number, id: number): void {
  if (conn.v5) { conn.send(encodeAck(qos === 1 ? PUBACK : PUBREC, id, RC.QUOTA_EXCEEDED, true)); return }
  // at once: the acks of earlier messages go out first (end() commits), later PUBLISHes are not read
  closeToResend(conn, 'a subscriber queue is full')
}

/**
 * Closes an MQTT 3 publisher so that it resends later (it has no refusal code). Its will is not
 * published: the client did nothing wrong and comes back, and a retained "offline" will would
 * otherwise fire each time some queue is full or the disk is.
 */
function closeToResend(conn: Connection, why: string): void {
  conn.cleanDisconnect = true
  conn.disconnect(RC.QUOTA_EXCEEDED, why)
}

/** $SYS/ belongs to the broker: clients may not publish there (nor leave a will there). */
export function isSysTopic(topic: string): boolean {
  return topic.charCodeAt(0) === 36 && (topic === '$SYS' || topic.startsWith('$SYS/'))
}

/** A frame at least this large, already in a buffer the framer allocated, is used in place. */
const IN_PLACE = 4096

/**
 * The whole PUBLISH frame (fixed header + body, body = buf[start, end)) in a buffer the
 * message may keep: the received buffer itself when it holds exactly this frame (the common
 * one-packet read: no copy, no allocation); a view when the framer already copied a large
 * frame; otherwise one copy of just this frame (a small view would pin a whole read buffer),
 * into a slab when it is small (slab.ts: the payload view of a small buffer of its own costs
 * ~400 ns in Bun; bench before/after in the commit that added it).
 */
function ownFrame(header: number, buf: Buffer, start: number, end: number, owned: boolean): Buffer {
  const len = end - start
  const hdrLen = 1 + varintSize(len)
  const from = start - hdrLen
  // from === 0 also proves the remaining length was minimally encoded: the bytes are reusable
  if (from === 0 && end === buf.length) return buf
  if (owned && len >= IN_PLACE && from >= 0 && buf[from] === header) return buf.subarray(from, end)
  const f = frameBuffer(hdrLen + len)
  f[0] = header
  writeVarint(f, 1, len)
  buf.copy(f, hdrLen, start, end)
  return f
}

function validUtf8(b: Buffer): boolean {
  try {
    utf8.decode(b)
    return true
  } catch {
    return false
  }
}

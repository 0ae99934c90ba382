import type { QoS } from 'mqtt-packet'
import type { MessageProps } from './message.ts'
import { tooManyUserProperties } from './entry-limits.ts'
import { MqttError, RC } from './reason-codes.ts'
import { checkUtf8, decodeUtf8 } from './utf8.ts'
import { readVarint, varintSize, writeVarint } from './varint.ts'

/** A decoded PUBLISH as it arrives from a client (hand-written fast path). */
export interface InPublish {
  topic: string
  packetId: number
  qos: QoS
  retain: boolean
  dup: boolean
  payload: Buffer
  props: MessageProps | null
  /** Message Expiry Interval in seconds, or -1 when absent. */
  expiry: number
  /** Topic Alias, 0 when absent. */
  topicAlias: number
}

const malformed = (what: string) => new MqttError(RC.MALFORMED_PACKET, `malformed PUBLISH: ${what}`)
const protocol = (what: string) => new MqttError(RC.PROTOCOL_ERROR, `PUBLISH: ${what}`)

/**
 * Decodes a PUBLISH body. The payload is copied so the socket's buffer can be reused, unless
 * the caller says the body is its own to keep (then the payload is a view into it). The body
 * starts at `offset` in `body` (so a caller holding the whole frame needs no second view).
 * With `out`, the result is written into that object instead of a new one (a hot caller
 * reuses one: no allocation per packet).
 */
export function decodePublish(header: number, body: Buffer, v5: boolean, keepBody = false, offset = 0, out?: InPublish, maxUserProps = Infinity): InPublish {
  const bits = (header >> 1) & 3
  // [MQTT-3.3.1-4] a PUBLISH must not have both QoS bits set
  if (bits === 3) throw malformed('QoS bits both set')
  const qos = bits as QoS
  const dup = (header & 8) !== 0
  // [MQTT-3.3.1-2] DUP must be 0 for QoS 0
  if (dup && qos === 0) throw malformed('DUP flag set on a QoS 0 message')
  const end = body.length
  if (end - offset < 2) throw malformed('too short for the topic length')
  const tlen = (body[offset]! << 8) | body[offset + 1]!
  let pos = offset + 2 + tlen
  if (pos > end) throw malformed('topic longer than the packet')
  const topic = decodeUtf8(body, offset + 2, pos, 'topic name')
  let packetId = 0
  if (qos > 0) {
    if (pos + 2 > end) throw malformed('missing packet identifier')
    packetId = (body[pos]! << 8) | body[pos + 1]!
    pos += 2
    // [MQTT-2.2.1-3] a QoS > 0 PUBLISH has a non-zero packet identifier
    if (packetId === 0) throw malformed('packet identifier 0')
  }
  let props: MessageProps | null = null
  let expiry = -1
  let topicAlias = 0
  if (v5) {
    const vi = readVarint(body, pos, end)
    if (vi === null) throw malformed('bad property length')
    const plen = vi[0]
    pos = vi[1]
    const pend = pos + plen
    if (pend > end) throw malformed('properties longer than the packet')
    if (plen > 0) {
      props = {}
      let userStart = -1
      let userEnd = -1
      let contiguous = true
      const userParts: Buffer[] = []
      const seen = new Set<number>()
      while (pos < pend) {
        const id = body[pos++]!
        if (id !== 0x26 && seen.has(id)) throw protocol(`property 0x${id.toString(16)} included twice`)
        seen.add(id)
        switch (id) {
          case 0x01: {
            if (pos + 1 > pend) throw malformed('truncated payload format indicator')
            const v = body[pos++]!
            if (v > 1) throw protocol('payload format indicator must be 0 or 1')
            props.payloadFormatIndicator = v
            break
          }
          case 0x02:
            if (pos + 4 > pend) throw malformed('truncated message expiry interval')
            expiry = body.readUInt32BE(pos)
            pos += 4
            break
          case 0x23:
            if (pos + 2 > pend) throw malformed('truncated topic alias')
            topicAlias = (body[pos]! << 8) | body[pos + 1]!
            pos += 2
            // [MQTT-3.3.2-8] a Topic Alias of 0 is not permitted
            if (topicAlias === 0) throw new MqttError(RC.TOPIC_ALIAS_INVALID, 'topic alias 0')
            break
          case 0x03: case 0x08: {
            if (pos + 2 > pend) throw malformed('truncated string property')
            const l = (body[pos]! << 8) | body[pos + 1]!
            if (pos + 2 + l > pend) throw malformed('truncated string property')
            const s = decodeUtf8(body, pos + 2, pos + 2 + l, id === 3 ? 'content type' : 'response topic')
            if (id === 3) props.contentType = s
            else {
              // [MQTT-3.3.2-14] the Response Topic is a topic name: no wildcards
              if (s.length === 0 || s.includes('+') || s.includes('#')) throw protocol('invalid response topic')
              props.responseTopic = s
            }
            pos += 2 + l
            break
          }
          case 0x09: {
            if (pos + 2 > pend) throw malformed('truncated correlation data')
            const l = (body[pos]! << 8) | body[pos + 1]!
            if (pos + 2 + l > pend) throw malformed('truncated correlation data')
            props.correlationData = Buffer.from(body.subarray(pos + 2, pos + 2 + l))
            pos += 2 + l
            break
          }
          case 0x26: {
            if (userParts.length >= maxUserProps) throw tooManyUserProperties(maxUserProps)
            const start = pos - 1
            for (let k = 0; k < 2; k++) {
              if (pos + 2 > pend) throw malformed('truncated user property')
              const l = (body[pos]! << 8) | body[pos + 1]!
              if (pos + 2 + l > pend) throw malformed('truncated user property')
              checkUtf8(body, pos + 2, pos + 2 + l, 'user property')
              pos += 2 + l
            }
            if (userStart < 0) userStart = start
            else if (start !== userEnd) contiguous = false
            userEnd = pos
            userParts.push(body.subarray(start, pos))
            break
          }
          case 0x0b:
            // [MQTT-3.3.4-6] a PUBLISH from a client must not contain a Subscription Identifier
            throw protocol('subscription identifier sent by a client')
          default:
            throw malformed(`unknown property 0x${id.toString(16)}`)
        }
      }
      // usually adjacent: then a view of the kept body rather than a copy (16 MiB took 20 ms)
      if (userParts.length > 0) props.userProps = keepBody && contiguous ? body.subarray(userStart, userEnd) : Buffer.concat(userParts)
      if (props.payloadFormatIndicator === undefined && props.contentType === undefined &&
        props.responseTopic === undefined && props.correlationData === undefined &&
        props.userProps === undefined) props = null
    }
  }
  const payload = keepBody ? body.subarray(pos) : Buffer.from(body.subarray(pos))
  const retain = (header & 1) !== 0
  if (out === undefined) return { topic, packetId, qos, retain, dup, payload, props, expiry, topicAlias }
  out.topic = topic
  out.packetId = packetId
  out.qos = qos
  out.retain = retain
  out.dup = dup
  out.payload = payload
  out.props = props
  out.expiry = expiry
  out.topicAlias = topicAlias
  return out
}

/** What varies per delivery of one message. */
export interface OutPublish {
  topic: string
  payload: Buffer
  qos: QoS
  retain: boolean
  dup: boolean
  packetId: number
  props: MessageProps | null
  /** Remaining expiry in seconds, or -1. */
  expiry: number
  topicAlias: number
  subIds: number[] | null
}

/** Encodes a PUBLISH; v5 properties are written only when v5 is true. */
export function encodePublish(p: OutPublish, v5: boolean): Buffer {
  const topicLen = Buffer.byteLength(p.topic)
  let plen = 0
  const pr = p.props
  let ct = 0, rt = 0
  if (v5) {
    if (pr !== null) {
      if (pr.payloadFormatIndicator !== undefined) plen += 2
      if (pr.contentType !== undefined) { ct = Buffer.byteLength(pr.contentType); plen += 3 + ct }
      if (pr.responseTopic !== undefined) { rt = Buffer.byteLength(pr.responseTopic); plen += 3 + rt }
      if (pr.correlationData !== undefined) plen += 3 + pr.correlationData.length
      if (pr.userProps !== undefined) plen += pr.userProps.length
    }
    if (p.expiry >= 0) plen += 5
    if (p.topicAlias > 0) plen += 3
    if (p.subIds !== null) for (const id of p.subIds) plen += 1 + varintSize(id)
  }
  const remaining = 2 + topicLen + (p.qos > 0 ? 2 : 0) + (v5 ? varintSize(plen) + plen : 0) + p.payload.length
  const buf = Buffer.allocUnsafe(1 + varintSize(remaining) + remaining)
  buf[0] = 0x30 | (p.dup ? 8 : 0) | (p.qos << 1) | (p.retain ? 1 : 0)
  let pos = writeVarint(buf, 1, remaining)
  buf[pos++] = topicLen >> 8
  buf[pos++] = topicLen & 0xff
  pos += buf.write(p.topic, pos)
  if (p.qos > 0) {
    buf[pos++] = p.packetId >> 8
    buf[pos++] = p.packetId & 0xff
  }
  if (v5) {
    pos = writeVarint(buf, pos, plen)
    if (pr !== null) {
      if (pr.payloadFormatIndicator !== undefined) { buf[pos++] = 0x01; buf[pos++] = pr.payloadFormatIndicator }
      if (pr.contentType !== undefined) pos = writeStr(buf, pos, 0x03, pr.contentType, ct)
      if (pr.responseTopic !== undefined) pos = writeStr(buf, pos, 0x08, pr.responseTopic, rt)
      if (pr.correlationData !== undefined) {
        buf[pos++] = 0x09
        buf.writeUInt16BE(pr.correlationData.length, pos)
        pos += 2 + pr.correlationData.copy(buf, pos + 2)
      }
    }
    if (p.expiry >= 0) { buf[pos++] = 0x02; buf.writeUInt32BE(p.expiry, pos); pos += 4 }
    if (p.topicAlias > 0) { buf[pos++] = 0x23; buf.writeUInt16BE(p.topicAlias, pos); pos += 2 }
    if (p.subIds !== null) for (const id of p.subIds) { buf[pos++] = 0x0b; pos = writeVarint(buf, pos, id) }
    if (pr !== null && pr.userProps !== undefined) pos += pr.userProps.copy(buf, pos)
  }
  p.payload.copy(buf, pos)
  return buf
}

function writeStr(buf: Buffer, pos: number, id: number, s: string, len: number): number {
  buf[pos++] = id
  buf[pos++] = len >> 8
  buf[pos++] = len & 0xff
  return pos + buf.write(s, pos)
}

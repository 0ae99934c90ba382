import { tooManyUserProperties } from './entry-limits.ts'
import { MqttError, RC } from './reason-codes.ts'
import { checkUtf8 } from './utf8.ts'
import { readVarint } from './varint.ts'

export const PUBACK = 4
export const PUBREC = 5
export const PUBREL = 6
export const PUBCOMP = 7

/** A decoded PUBACK, PUBREC, PUBREL or PUBCOMP (hand-written fast path). */
export interface InAck {
  type: number
  packetId: number
  reason: number
}

const PUBACK_CODES = new Set([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])
const PUBREL_CODES = new Set([0x00, 0x92])

export function decodeAck(header: number, body: Buffer, v5: boolean, start = 0, end = body.length, out?: InAck, maxUserProps = Infinity): InAck {
  const type = header >> 4
  const name = ['', '', '', '', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP'][type]
  // [MQTT-3.6.1-1] PUBREL has flags 0010; [MQTT-2.2.2-1] the others 0000
  if ((header & 0x0f) !== (type === PUBREL ? 2 : 0)) {
    throw new MqttError(RC.MALFORMED_PACKET, `${name} with invalid fixed header flags`)
  }
  // the body is body[start, end): no view of it is made on the hot path
  const len = end - start
  if (len < 2 || (!v5 && len !== 2)) {
    throw new MqttError(RC.MALFORMED_PACKET, `${name} with remaining length ${len}`)
  }
  const packetId = (body[start]! << 8) | body[start + 1]!
  if (packetId === 0) throw new MqttError(RC.MALFORMED_PACKET, `${name} with packet identifier 0`)
  let reason = 0
  if (v5 && len > 2) {
    reason = body[start + 2]!
    const ok = type === PUBREL || type === PUBCOMP ? PUBREL_CODES.has(reason) : PUBACK_CODES.has(reason)
    if (!ok) throw new MqttError(RC.MALFORMED_PACKET, `${name} with invalid reason code 0x${reason.toString(16)}`)
    if (len > 3) {
      checkAckProps(body.subarray(start, end), name!, maxUserProps)
    }
  }
  if (out === undefined) return { type, packetId, reason }
  out.type = type
  out.packetId = packetId
  out.reason = reason
  return out
}

/** Ack properties may only be Reason String (0x1F, once) and User Properties (0x26). */
function checkAckProps(body: Buffer, name: string, maxUserProps: number): void {
  const bad = (what: string) => new MqttError(RC.MALFORMED_PACKET, `${name} ${what}`)
  const vi = readVarint(body, 3, body.length)
  if (vi === null || vi[1] + vi[0] !== body.length) throw bad('with bad property length')
  let pos = vi[1]
  let reasonString = false
  let users = 0
  const str = () => {
    if (pos + 2 > body.length) throw bad('with a truncated property')
    const l = (body[pos]! << 8) | body[pos + 1]!
    if (pos + 2 + l > body.length) throw bad('with a truncated property')
    checkUtf8(body, pos + 2, pos + 2 + l, `${name} property`)
    pos += 2 + l
  }
  while (pos < body.length) {
    const id = body[pos++]!
    if (id === 0x1f) {
      if (reasonString) throw new MqttError(RC.PROTOCOL_ERROR, `${name} with Reason String twice`)
      reasonString = true
      str()
    } else if (id === 0x26) {
      if (++users > maxUserProps) throw tooManyUserProperties(maxUserProps)
      str()
      str()
    } else throw bad(`with invalid property 0x${id.toString(16)}`)
  }
}

/** Encodes an ack. In v5 the reason code is omitted when it is Success (spec 3.4.2.1). */
export function encodeAck(type: number, packetId: number, reason: number, v5: boolean): Buffer {
  const first = (type << 4) | (type === PUBREL ? 2 : 0)
  if (v5 && reason !== 0) return Buffer.from([first, 3, packetId >> 8, packetId & 0xff, reason])
  return Buffer.from([first, 2, packetId >> 8, packetId & 0xff])
}

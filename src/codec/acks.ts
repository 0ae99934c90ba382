import { MqttError, RC } from './reason-codes.ts'

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

export function decodeAck(header: number, body: Buffer, v5: boolean): InAck {
  const type = header >> 4
  const name = ['', '', '', '', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP'][type]
  // [MQTT-3.6.1-1] PUBREL has flags 0010; [MQTT-2.2.2-1] the others 0000
  if ((header & 0x0f) !== (type === PUBREL ? 2 : 0)) {
    throw new MqttError(RC.MALFORMED_PACKET, `${name} with invalid fixed header flags`)
  }
  if (body.length < 2 || (!v5 && body.length !== 2)) {
    throw new MqttError(RC.MALFORMED_PACKET, `${name} with remaining length ${body.length}`)
  }
  const packetId = (body[0]! << 8) | body[1]!
  if (packetId === 0) throw new MqttError(RC.MALFORMED_PACKET, `${name} with packet identifier 0`)
  let reason = 0
  if (v5 && body.length > 2) {
    reason = body[2]!
    const ok = type === PUBREL || type === PUBCOMP ? PUBREL_CODES.has(reason) : PUBACK_CODES.has(reason)
    if (!ok) throw new MqttError(RC.MALFORMED_PACKET, `${name} with invalid reason code 0x${reason.toString(16)}`)
    if (body.length > 3) {
      // properties: only checked for consistent length; reason string and user properties are informational
      let len = 0, mult = 1, pos = 3, done = false
      for (let n = 0; n < 4 && pos < body.length; n++) {
        const b = body[pos++]!
        len += (b & 0x7f) * mult
        mult *= 128
        if ((b & 0x80) === 0) { done = true; break }
      }
      if (!done || pos + len !== body.length) throw new MqttError(RC.MALFORMED_PACKET, `${name} with bad property length`)
    }
  }
  return { type, packetId, reason }
}

/** Encodes an ack. In v5 the reason code is omitted when it is Success [MQTT-3.4.2-1]. */
export function encodeAck(type: number, packetId: number, reason: number, v5: boolean): Buffer {
  const first = (type << 4) | (type === PUBREL ? 2 : 0)
  if (v5 && reason !== 0) return Buffer.from([first, 3, packetId >> 8, packetId & 0xff, reason])
  return Buffer.from([first, 2, packetId >> 8, packetId & 0xff])
}

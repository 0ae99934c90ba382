import mqttPacket from 'mqtt-packet'
import type { IConnectPacket, Packet } from 'mqtt-packet'
import { MqttError, RC } from './reason-codes.ts'
import { varintSize, writeVarint } from './varint.ts'

export type { Packet } from 'mqtt-packet'
export type ProtocolVersion = 3 | 4 | 5

const REPLACEMENT = Buffer.from([0xef, 0xbf, 0xbd])

/** What the first bytes of a CONNECT say, read before the full parse so that an unsupported
 * protocol can be answered with the right CONNACK [MQTT-3.1.2-2]. */
export interface ConnectPeek {
  protocolName: string
  level: number
}

export function peekConnect(body: Buffer): ConnectPeek | null {
  if (body.length < 3) return null
  const len = (body[0]! << 8) | body[1]!
  if (body.length < 3 + len) return null
  return { protocolName: body.toString('latin1', 2, 2 + len), level: body[2 + len]! }
}

/**
 * Decodes the less frequent packet types with mqtt-packet. PUBLISH and the acks use the
 * hand-written fast path in publish.ts and acks.ts.
 */
export function decodePacket(header: number, body: Buffer, version: ProtocolVersion): Packet {
  const frame = Buffer.allocUnsafe(1 + varintSize(body.length) + body.length)
  frame[0] = header
  body.copy(frame, writeVarint(frame, 1, body.length))
  const parser = mqttPacket.parser({ protocolVersion: version })
  let result: Packet | null = null
  let error: Error | null = null
  parser.on('packet', (p: Packet) => { result ??= p })
  parser.on('error', (e: Error) => { error ??= e })
  parser.parse(frame)
  if (error !== null) throw new MqttError(RC.MALFORMED_PACKET, (error as Error).message)
  if (result === null) throw new MqttError(RC.MALFORMED_PACKET, 'incomplete packet')
  checkStrings(result, body)
  return result
}

/** mqtt-packet decodes strings leniently; [MQTT-1.5.4-1] ill-formed UTF-8 and [MQTT-1.5.4-2]
 * U+0000 make the packet malformed. */
function checkStrings(p: Packet, body: Buffer): void {
  const strings: string[] = []
  if (p.cmd === 'connect') {
    const c = p as IConnectPacket
    strings.push(c.clientId)
    if (c.username !== undefined) strings.push(c.username)
    if (c.will !== undefined) strings.push(c.will.topic)
  } else if (p.cmd === 'subscribe') {
    for (const s of p.subscriptions) strings.push(s.topic)
  } else if (p.cmd === 'unsubscribe') {
    for (const s of p.unsubscriptions) strings.push(s)
  }
  const hasReplacement = body.includes(REPLACEMENT)
  for (const s of strings) {
    if (s.includes('\u0000')) throw new MqttError(RC.MALFORMED_PACKET, 'string contains U+0000')
    if (!hasReplacement && s.includes('\ufffd')) throw new MqttError(RC.MALFORMED_PACKET, 'string is not well-formed UTF-8')
  }
}

/** Encodes any packet with mqtt-packet. */
export function encodePacket(packet: Packet, version: ProtocolVersion): Buffer {
  return mqttPacket.generate(packet, { protocolVersion: version })
}

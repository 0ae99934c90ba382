/**
 * Independent MQTT packet byte builder for tests, written from the MQTT 3.1, 3.1.1 and 5.0
 * specs. It must not import anything from src/: it is the oracle our codec is checked against.
 * Every function returns the complete frame (fixed header + remaining length + body) as a Buffer.
 */
import { bin, properties, str, u16, varint, type Props } from './mqtt-properties.ts'

export { bin, properties, propertyBytes, str, u16, u32, varint, type Props } from './mqtt-properties.ts'

export type Version = 3 | 4 | 5
type Bytes = Uint8Array | number[]

/** Packet type numbers (spec 2.1.2). */
export const TYPE = {
  CONNECT: 1, CONNACK: 2, PUBLISH: 3, PUBACK: 4, PUBREC: 5, PUBREL: 6, PUBCOMP: 7,
  SUBSCRIBE: 8, SUBACK: 9, UNSUBSCRIBE: 10, UNSUBACK: 11, PINGREQ: 12, PINGRESP: 13,
  DISCONNECT: 14, AUTH: 15,
} as const

/** Fixed header + Variable Byte Integer remaining length + body. */
export function frame(type: number, flags: number, body: Bytes = []): Buffer {
  return Buffer.from([((type & 0x0f) << 4) | (flags & 0x0f), ...varint(body.length), ...body])
}

/** Splits a frame into the first header byte and the body (what our Framer hands to decoders). */
export function splitFrame(buf: Uint8Array): { header: number; body: Buffer } {
  let len = 0
  let mult = 1
  let i = 1
  for (;;) {
    if (i > 4 || i >= buf.length) throw new Error('bad remaining length in test frame')
    const b = buf[i++]!
    len += (b & 0x7f) * mult
    mult *= 128
    if ((b & 0x80) === 0) break
  }
  if (buf.length !== i + len) throw new Error(`frame length mismatch: header says ${len}, have ${buf.length - i}`)
  return { header: buf[0]!, body: Buffer.from(buf.subarray(i)) }
}

/** Hex string (spaces and newlines allowed) to bytes. */
export function hex(s: string): Buffer {
  const clean = s.replace(/\s+/g, '')
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new Error(`bad hex fixture: ${s}`)
  return Buffer.from(clean, 'hex')
}

const utf8 = (s: Uint8Array | string): Uint8Array => typeof s === 'string' ? new TextEncoder().encode(s) : s

export interface WillOpts {
  topic: string
  payload: Uint8Array | string
  qos?: number
  retain?: boolean
  /** v5 only: will properties (will delay, payload format, message expiry, content type, ...). */
  properties?: Props
}

export interface ConnectOpts {
  version?: Version
  clientId?: string
  clean?: boolean
  keepalive?: number
  username?: string
  password?: Uint8Array | string
  will?: WillOpts
  /** v5 CONNECT properties. */
  properties?: Props
  /** Escape hatches for malformed tests. */
  protocolName?: string
  protocolLevel?: number
  /** Replaces the computed Connect Flags byte. */
  flags?: number
  /** Raw bytes appended after the payload. */
  trailing?: Bytes
}

/** CONNECT (spec 3.1). v3 uses "MQIsdp" level 3, v4 "MQTT" level 4, v5 "MQTT" level 5. */
export function connect(o: ConnectOpts = {}): Buffer {
  const version = o.version ?? 4
  const name = o.protocolName ?? (version === 3 ? 'MQIsdp' : 'MQTT')
  const level = o.protocolLevel ?? version
  let flags = 0
  if (o.clean ?? true) flags |= 0x02
  if (o.will !== undefined) flags |= 0x04 | ((o.will.qos ?? 0) << 3) | (o.will.retain ? 0x20 : 0)
  if (o.password !== undefined) flags |= 0x40
  if (o.username !== undefined) flags |= 0x80
  if (o.flags !== undefined) flags = o.flags
  const body: number[] = [...str(name), level, flags, ...u16(o.keepalive ?? 60)]
  if (version === 5) body.push(...properties(o.properties))
  body.push(...str(o.clientId ?? ''))
  if (o.will !== undefined) {
    if (version === 5) body.push(...properties(o.will.properties))
    body.push(...str(o.will.topic), ...bin(utf8(o.will.payload)))
  }
  if (o.username !== undefined) body.push(...str(o.username))
  if (o.password !== undefined) body.push(...bin(utf8(o.password)))
  if (o.trailing !== undefined) body.push(...o.trailing)
  return frame(TYPE.CONNECT, 0, body)
}

export interface PublishOpts {
  topic: string
  payload?: Uint8Array | string
  qos?: number
  dup?: boolean
  retain?: boolean
  packetId?: number
  version?: Version
  properties?: Props
}

/** PUBLISH (spec 3.3). The packet id is written whenever qos > 0 (default 1). */
export function publish(o: PublishOpts): Buffer {
  const qos = o.qos ?? 0
  const flags = (o.dup ? 0x08 : 0) | ((qos & 3) << 1) | (o.retain ? 0x01 : 0)
  const body: number[] = [...str(o.topic)]
  if (qos > 0) body.push(...u16(o.packetId ?? 1))
  if (o.version === 5) body.push(...properties(o.properties))
  body.push(...utf8(o.payload ?? ''))
  return frame(TYPE.PUBLISH, flags, body)
}

export interface AckOpts {
  version?: Version
  /** v5 reason code; written when given or when properties are given. */
  reason?: number
  properties?: Props
  /** Override the fixed header flags (PUBREL defaults to 0b0010, the others to 0). */
  flags?: number
}

function ack(type: number, packetId: number, o: AckOpts): Buffer {
  const body = [...u16(packetId)]
  if (o.version === 5 && (o.reason !== undefined || o.properties !== undefined)) {
    body.push(o.reason ?? 0)
    if (o.properties !== undefined) body.push(...properties(o.properties))
  }
  return frame(type, o.flags ?? (type === TYPE.PUBREL ? 0x02 : 0), body)
}

export const puback = (id: number, o: AckOpts = {}) => ack(TYPE.PUBACK, id, o)
export const pubrec = (id: number, o: AckOpts = {}) => ack(TYPE.PUBREC, id, o)
export const pubrel = (id: number, o: AckOpts = {}) => ack(TYPE.PUBREL, id, o)
export const pubcomp = (id: number, o: AckOpts = {}) => ack(TYPE.PUBCOMP, id, o)

export interface Subscription {
  topic: string
  qos?: number
  /** v5 subscription options (spec 3.8.3.1). */
  nl?: boolean
  rap?: boolean
  rh?: number
  /** Replaces the computed options byte. */
  options?: number
}

export interface SubscribeOpts {
  version?: Version
  /** v5 properties, e.g. { subscriptionIdentifier: 7, userProperties: [...] }. */
  properties?: Props
}

/** SUBSCRIBE (spec 3.8), fixed header flags 0b0010. */
export function subscribe(packetId: number, subs: (Subscription | string)[], o: SubscribeOpts = {}): Buffer {
  const body = [...u16(packetId)]
  if (o.version === 5) body.push(...properties(o.properties))
  for (const raw of subs) {
    const s = typeof raw === 'string' ? { topic: raw } : raw
    const opts = s.options ?? ((s.qos ?? 0) | (s.nl ? 0x04 : 0) | (s.rap ? 0x08 : 0) | ((s.rh ?? 0) << 4))
    body.push(...str(s.topic), opts)
  }
  return frame(TYPE.SUBSCRIBE, 0x02, body)
}

/** UNSUBSCRIBE (spec 3.10), fixed header flags 0b0010. */
export function unsubscribe(packetId: number, filters: string[], o: SubscribeOpts = {}): Buffer {
  const body = [...u16(packetId)]
  if (o.version === 5) body.push(...properties(o.properties))
  for (const f of filters) body.push(...str(f))
  return frame(TYPE.UNSUBSCRIBE, 0x02, body)
}

export const pingreq = (): Buffer => frame(TYPE.PINGREQ, 0)
export const pingresp = (): Buffer => frame(TYPE.PINGRESP, 0)

export interface ReasonOpts {
  version?: Version
  reason?: number
  properties?: Props
}

/** DISCONNECT (spec 3.14). v3/v4: empty body; v5: reason code and properties when given. */
export function disconnect(o: ReasonOpts = {}): Buffer {
  const body: number[] = []
  if (o.version === 5 && (o.reason !== undefined || o.properties !== undefined)) {
    body.push(o.reason ?? 0)
    if (o.properties !== undefined) body.push(...properties(o.properties))
  }
  return frame(TYPE.DISCONNECT, 0, body)
}

/** AUTH (spec 3.15), v5 only: reason code (default 0x18 Continue) and properties. */
export function auth(o: Omit<ReasonOpts, 'version'> = {}): Buffer {
  const body: number[] = [o.reason ?? 0x18]
  if (o.properties !== undefined) body.push(...properties(o.properties))
  return frame(TYPE.AUTH, 0, body)
}

/** CONNACK (spec 3.2): for comparing with what the server sends. */
export function connack(o: { version?: Version; sessionPresent?: boolean; code?: number; properties?: Props } = {}): Buffer {
  const body = [o.sessionPresent ? 1 : 0, o.code ?? 0]
  if (o.version === 5) body.push(...properties(o.properties))
  return frame(TYPE.CONNACK, 0, body)
}

/** SUBACK (spec 3.9): one return/reason code per subscription. */
export function suback(packetId: number, codes: number[], o: { version?: Version; properties?: Props } = {}): Buffer {
  const body = [...u16(packetId)]
  if (o.version === 5) body.push(...properties(o.properties))
  return frame(TYPE.SUBACK, 0, [...body, ...codes])
}

/** UNSUBACK (spec 3.11): v3/v4 have no payload; v5 has properties and one reason code per filter. */
export function unsuback(packetId: number, o: { version?: Version; codes?: number[]; properties?: Props } = {}): Buffer {
  const body = [...u16(packetId)]
  if (o.version === 5) body.push(...properties(o.properties), ...(o.codes ?? []))
  return frame(TYPE.UNSUBACK, 0, body)
}

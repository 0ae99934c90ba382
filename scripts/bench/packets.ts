/**
 * MQTT packet bytes for the load generator, built by hand (independent of src/codec, so a
 * codec bug cannot hide itself in the benchmark). MQTT 3.1.1 (level 4) and 5.
 */
export type Version = 4 | 5
export type QoS = 0 | 1 | 2

export function varint(n: number): number[] {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return out
}

export function packet(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first, ...varint(body.length)]), body])
}

export function str(s: string): Buffer {
  const b = Buffer.from(s)
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b])
}

export interface ConnectOptions {
  clientId: string
  version: Version
  /** Clean session (v3.1.1) / clean start (v5); default true. */
  clean?: boolean
  /** v5 Session Expiry Interval in seconds (a persistent v5 session needs one). */
  sessionExpiry?: number
  /** Seconds; 0 = no keepalive. Default 60. */
  keepalive?: number
}

export function connectPacket(o: ConnectOptions): Buffer {
  const clean = o.clean ?? true
  const ka = o.keepalive ?? 60
  let props = Buffer.alloc(0)
  if (o.version === 5) {
    const e = o.sessionExpiry ?? 0
    props = e > 0 ? Buffer.from([5, 0x11, (e >>> 24) & 0xff, (e >> 16) & 0xff, (e >> 8) & 0xff, e & 0xff]) : Buffer.from([0])
  }
  const head = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, o.version, clean ? 0x02 : 0x00, ka >> 8, ka & 0xff])
  return packet(0x10, Buffer.concat([head, props, str(o.clientId)]))
}

export function subscribePacket(filter: string, qos: QoS, packetId: number, version: Version): Buffer {
  const props = version === 5 ? Buffer.from([0]) : Buffer.alloc(0)
  return packet(0x82, Buffer.concat([Buffer.from([packetId >> 8, packetId & 0xff]), props, str(filter), Buffer.from([qos])]))
}

/** One PUBLISH with packet id 0 (QoS 1/2) and where to patch the packet id and the payload. */
export interface PublishTemplate { bytes: Buffer; idAt: number; payloadAt: number }

export function publishTemplate(topic: string, payload: Buffer, qos: QoS, version: Version): PublishTemplate {
  const t = str(topic)
  const id = qos > 0 ? Buffer.from([0, 0]) : Buffer.alloc(0)
  const props = version === 5 ? Buffer.from([0]) : Buffer.alloc(0)
  const body = Buffer.concat([t, id, props, payload])
  const bytes = packet(0x30 | (qos << 1), body)
  const bodyAt = bytes.length - body.length
  return { bytes, idAt: bodyAt + t.length, payloadAt: bytes.length - payload.length }
}

/** PUBACK 4, PUBREC 5, PUBREL 6, PUBCOMP 7 with success (v5 allows the 2-byte short form). */
export function ackPacket(type: 4 | 5 | 6 | 7, hi: number, lo: number): Buffer {
  return Buffer.from([(type << 4) | (type === 6 ? 2 : 0), 2, hi, lo])
}

export const DISCONNECT = Buffer.from([0xe0, 0])

/** Reads a PUBLISH body: where its payload starts, and its packet id (0 for QoS 0). */
export function publishPayloadAt(buf: Buffer, bodyAt: number, qos: number, version: Version): number {
  let p = bodyAt + 2 + ((buf[bodyAt]! << 8) | buf[bodyAt + 1]!)
  if (qos > 0) p += 2
  if (version === 5) {
    let len = 0, mult = 1, b: number
    do { b = buf[p++]!; len += (b & 0x7f) * mult; mult *= 128 } while (b & 0x80)
    p += len
  }
  return p
}

/** The v5 CONNACK Receive Maximum (property 0x21), or 65535 when absent or for v3.1.1. */
export function connackReceiveMaximum(body: Buffer, version: Version): number {
  if (version !== 5 || body.length < 3) return 65535
  let p = 2, len = 0, mult = 1, b: number
  do { b = body[p++]!; len += (b & 0x7f) * mult; mult *= 128 } while (b & 0x80)
  const end = p + len
  while (p < end) {
    const id = body[p++]!
    if (id === 0x21) return (body[p]! << 8) | body[p + 1]!
    // skip the other CONNACK properties by their type
    if (id === 0x11 || id === 0x27) p += 4
    else if (id === 0x13 || id === 0x22) p += 2
    else if (id === 0x24 || id === 0x25 || id === 0x28 || id === 0x29 || id === 0x2a) p += 1
    else if (id === 0x26) { p += 2 + ((body[p]! << 8) | body[p + 1]!); p += 2 + ((body[p]! << 8) | body[p + 1]!) }
    else { p += 2 + ((body[p]! << 8) | body[p + 1]!) }
  }
  return 65535
}

import mqttPacket from 'mqtt-packet'
import type { IConnectPacket, Packet } from 'mqtt-packet'
import { checkEntryLimits, type EntryLimits } from './entry-limits.ts'
import { MqttError, RC } from './reason-codes.ts'
import { readVarint, varintSize, writeVarint } from './varint.ts'

export type { Packet } from 'mqtt-packet'
export type ProtocolVersion = 3 | 4 | 5

const REPLACEMENT = Buffer.from([0xef, 0xbf, 0xbd])

// mqtt-packet would otherwise build 65,536 cached two-byte Buffers (~6 MB) on first encode
;(mqttPacket.writeToStream as unknown as { cacheNumbers: boolean }).cacheNumbers = false

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

interface ReusableParser {
  parse(buf: Buffer): number
  on(event: string, fn: (x: never) => void): void
  _resetState(): void
  _pos: number
  settings: { protocolVersion: ProtocolVersion }
  packet: object
  error: Error | null
  _list: FrameList
  _stateCounter: number
}

/**
 * What mqtt-packet's parser reads its input through, for input that is always one whole frame
 * in one buffer. Its own reset makes a `bl` BufferListStream (a Duplex stream: a dozen objects)
 * for every packet, and every byte it reads through `bl` is a new view of the buffer; this
 * reads the frame in place. Out-of-range reads throw RangeError as `bl`'s do.
 */
export class FrameList {
  #buf: Buffer = Buffer.alloc(0)
  #off = 0
  length = 0

  append(buf: Buffer): void {
    if (this.length !== 0) throw new Error('FrameList holds one frame')
    this.#buf = buf
    this.#off = 0
    this.length = buf.length
  }

  consume(bytes: number): void {
    const n = Math.min(Math.max(bytes, 0), this.length)
    this.#off += n
    this.length -= n
  }

  readUInt8(at = 0): number {
    return this.#buf.readUInt8(this.#in(at, 1))
  }

  readUInt16BE(at = 0): number {
    return this.#buf.readUInt16BE(this.#in(at, 2))
  }

  readUInt32BE(at = 0): number {
    return this.#buf.readUInt32BE(this.#in(at, 4))
  }

  slice(start = 0, end = this.length): Buffer {
    const [a, b] = this.#range(start, end)
    return this.#buf.subarray(a, b)
  }

  toString(encoding?: BufferEncoding, start = 0, end = this.length): string {
    const [a, b] = this.#range(start, end)
    return this.#buf.toString(encoding, a, b)
  }

  /** Absolute offset of a read of `size` bytes at `at`; RangeError past the frame. */
  #in(at: number, size: number): number {
    if (at < 0 || at + size > this.length) throw new RangeError(`read of ${size} bytes at ${at} is outside the ${this.length}-byte packet`)
    return this.#off + at
  }

  #range(start: number, end: number): [number, number] {
    const a = Math.min(Math.max(start, 0), this.length)
    const b = Math.min(Math.max(end, a), this.length)
    return [this.#off + a, this.#off + b]
  }
}

/** One mqtt-packet parser, reused for every decode (it is reset before each whole frame):
 * a parser per packet would be garbage per CONNECT and SUBSCRIBE. */
const shared = {
  parser: makeParser(),
  result: null as Packet | null,
  error: null as Error | null,
  end: -1,
}

function makeParser(): ReusableParser {
  const parser = mqttPacket.parser({ protocolVersion: 4 }) as unknown as ReusableParser
  const Packet = parser.packet.constructor as new () => object
  // mqtt-packet's reset with a FrameList in place of a new `bl` stream (see FrameList)
  parser._resetState = function (this: ReusableParser) {
    this.packet = new Packet()
    this.error = null
    this._list = new FrameList()
    this._stateCounter = 0
  }
  parser.on('packet', (p: Packet) => {
    if (shared.result !== null) return
    shared.result = p
    shared.end = parser._pos
  })
  parser.on('error', (e: Error) => { shared.error ??= e })
  return parser
}

/**
 * Decodes the less frequent packet types with mqtt-packet. PUBLISH and the acks use the
 * hand-written fast path in publish.ts and acks.ts.
 */
export function decodePacket(header: number, body: Buffer, version: ProtocolVersion, lim?: EntryLimits): Packet {
  if (lim !== undefined) checkEntryLimits(header, body, version === 5, lim)
  const frame = Buffer.allocUnsafe(1 + varintSize(body.length) + body.length)
  frame[0] = header
  body.copy(frame, writeVarint(frame, 1, body.length))
  const parser = shared.parser
  shared.result = null
  shared.error = null
  parser._resetState()
  parser.settings = { protocolVersion: version }
  parser.parse(frame)
  const result = shared.result as Packet | null
  const error = shared.error as Error | null
  const end = shared.end
  shared.result = null
  if (error !== null || result === null) {
    // a failed parse may leave the parser mid-packet: start the next decode with a fresh one
    shared.parser = makeParser()
    throw new MqttError(RC.MALFORMED_PACKET, error?.message ?? 'incomplete packet')
  }
  // mqtt-packet ignores bytes after the last field of a CONNECT; the spec's lengths must add up
  if ((result as Packet).cmd === 'connect' && end !== body.length) {
    throw new MqttError(RC.MALFORMED_PACKET, 'CONNECT has bytes after its payload')
  }
  checkStrings(result, body)
  if (version === 5 && (result as Packet).cmd === 'connect') {
    const wp = (result as IConnectPacket).will?.properties as WillPropsRaw | undefined
    if (wp?.userProperties !== undefined) wp.rawUserProps = willUserProps(body)
  }
  return result
}

/** Will properties as decoded, plus their User Property entries as they were on the wire. */
export type WillPropsRaw = NonNullable<NonNullable<IConnectPacket['will']>['properties']> & { rawUserProps?: Buffer }

/**
 * The Will Properties' User Property (0x26) entries of a v5 CONNECT body, raw and in order:
 * mqtt-packet groups repeated names, which loses their order [MQTT-3.1.3-10]. Only for a
 * body mqtt-packet has accepted; undefined when there is no will or a property is unknown.
 */
export function willUserProps(body: Buffer): Buffer | undefined {
  let pos = 2 + ((body[0]! << 8) | body[1]!)
  if ((body[pos + 1]! & 0x04) === 0) return undefined
  pos += 4 // level, flags, keep alive
  const props = readVarint(body, pos, body.length)
  if (props === null) return undefined
  pos = props[1] + props[0]
  pos += 2 + ((body[pos]! << 8) | body[pos + 1]!) // client identifier
  const will = readVarint(body, pos, body.length)
  if (will === null) return undefined
  pos = will[1]
  const end = will[1] + will[0]
  const u16 = (at: number) => (body[at]! << 8) | body[at + 1]!
  const parts: Buffer[] = []
  while (pos < end) {
    const id = body[pos]!
    let size: number
    if (id === 0x01) size = 2
    else if (id === 0x02 || id === 0x18) size = 5
    else if (id === 0x03 || id === 0x08 || id === 0x09) size = 3 + u16(pos + 1)
    else if (id === 0x26) size = 3 + u16(pos + 1) + 2 + u16(pos + 3 + u16(pos + 1))
    else return undefined
    if (id === 0x26) parts.push(body.subarray(pos, pos + size))
    pos += size
  }
  return parts.length > 0 ? Buffer.concat(parts) : undefined
}

/** Collects every string in a decoded packet (binary fields are Buffers, not strings). */
function collectStrings(v: unknown, out: string[]): void {
  if (typeof v === 'string') out.push(v)
  else if (Array.isArray(v)) for (const x of v) collectStrings(x, out)
  else if (v !== null && typeof v === 'object' && !Buffer.isBuffer(v)) {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'cmd' || k === 'protocolId') continue
      out.push(k)
      collectStrings(x, out)
    }
  }
}

function countReplacement(body: Buffer): number {
  let n = 0
  for (let i = body.indexOf(REPLACEMENT); i >= 0; i = body.indexOf(REPLACEMENT, i + 3)) n++
  return n
}

/**
 * mqtt-packet decodes strings leniently (ill-formed bytes become U+FFFD) and turns a repeated
 * property into an array. [MQTT-1.5.4-1] ill-formed UTF-8 and [MQTT-1.5.4-2] U+0000 make the
 * packet malformed; [MQTT-2.2.2-2] a property other than User Property included twice is a
 * protocol error.
 */
function checkStrings(p: Packet, body: Buffer): void {
  const strings: string[] = []
  collectStrings(p, strings)
  let replacements = 0
  for (const s of strings) {
    if (s.includes('\u0000')) throw new MqttError(RC.MALFORMED_PACKET, 'string contains U+0000')
    for (let i = s.indexOf('\ufffd'); i >= 0; i = s.indexOf('\ufffd', i + 1)) replacements++
  }
  // every U+FFFD in the strings must stand for a real EF BF BD in the packet
  if (replacements > 0 && replacements > countReplacement(body)) {
    throw new MqttError(RC.MALFORMED_PACKET, 'string is not well-formed UTF-8')
  }
  const lists: unknown[] = [(p as { properties?: unknown }).properties]
  if (p.cmd === 'connect') lists.push(p.will?.properties)
  for (const props of lists) {
    if (props === undefined || props === null) continue
    for (const [k, v] of Object.entries(props)) {
      if (k !== 'userProperties' && Array.isArray(v)) throw new MqttError(RC.PROTOCOL_ERROR, `property ${k} included more than once`)
    }
  }
}

/** Encodes any packet: CONNACK (v3.1/v3.1.1) and SUBACK without properties directly, the rest with mqtt-packet. */
export function encodePacket(packet: Packet, version: ProtocolVersion): Buffer {
  // every client gets a CONNACK and most a SUBACK: v3.1/v3.1.1 ones (no properties) directly
  if (version !== 5) {
    if (packet.cmd === 'connack') return encodeConnack3(packet.sessionPresent, packet.returnCode)
    if (packet.cmd === 'suback') return encodeSuback(packet.messageId, packet.granted, false)
  } else if (packet.cmd === 'suback' && (packet.properties === undefined || Object.keys(packet.properties).length === 0)) {
    return encodeSuback(packet.messageId, packet.granted, true)
  }
  return mqttPacket.generate(packet, { protocolVersion: version })
}

/** CONNACK of MQTT 3.1 / 3.1.1: acknowledge flags, return code [MQTT-3.2.2-1]. */
function encodeConnack3(sessionPresent: boolean, returnCode: number | undefined): Buffer {
  if (typeof returnCode !== 'number') throw new Error('Invalid return code')
  return Buffer.from([0x20, 2, sessionPresent ? 1 : 0, returnCode])
}

/**
 * SUBACK: packet identifier, (v5: an empty property list,) one return / reason code per filter
 * [MQTT-3.9.3-1]. v5 SUBACKs with properties go through mqtt-packet.
 */
function encodeSuback(messageId: number | undefined, granted: readonly (number | object)[], v5: boolean): Buffer {
  if (typeof messageId !== 'number') throw new Error('Invalid messageId')
  if (granted.length === 0 || granted.some((g) => typeof g !== 'number')) throw new Error('Invalid qos vector')
  const len = (v5 ? 3 : 2) + granted.length
  const out = Buffer.allocUnsafe(1 + varintSize(len) + len)
  out[0] = 0x90
  let at = writeVarint(out, 1, len)
  out[at++] = messageId >> 8
  out[at++] = messageId & 0xff
  if (v5) out[at++] = 0
  for (const g of granted) out[at++] = g as number
  return out
}

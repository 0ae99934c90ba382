import { MqttError, RC } from './reason-codes.ts'
import { readVarint } from './varint.ts'

/** Receives each complete MQTT control packet: the first header byte and the variable header +
 * payload. An object, not a closure, so a connection needs no per-instance function. */
export interface FrameHandler {
  /**
   * The packet's variable header + payload is buf[start, end) (no view is made for it: most
   * handlers need none). owned: buf was allocated by the framer (joined parts of a packet).
   * Either way buf is never reused, so keeping a view of it is safe, though it pins all of buf.
   */
  onFrame(header: number, buf: Buffer, start: number, end: number, owned: boolean): void
}

/**
 * Incremental framer: turns a byte stream into whole packets. It checks the remaining length
 * against the maximum packet size as soon as the length is known, before buffering the body.
 * A Framer holds only an incomplete packet: a connection with nothing pending needs none
 * (Framer.first frames a chunk without one and returns one only for a rest).
 */
export class Framer {
  /** Bytes of an incomplete packet, kept as received. */
  #parts: Buffer[] | null = null
  #partsLen = 0
  /** Total size of the incomplete packet once its length is known, else 0. */
  #need = 0
  #max: number
  #caps: FramerCaps
  #since = 0
  /** Of `buffered`, what the owner has counted so far (the broker's memory budget). */
  accounted = 0

  /** caps: smaller limits for packets other than PUBLISH (see FramerCaps). */
  constructor(maxPacketSize: number, caps: FramerCaps = NO_CAPS) {
    this.#max = maxPacketSize
    this.#caps = caps
  }

  set maxPacketSize(n: number) {
    this.#max = n
  }

  /**
   * Frames `chunk` when nothing is buffered: calls onFrame for every whole packet and returns a
   * Framer holding the incomplete rest, or null when the chunk ended on a packet boundary.
   */
  static first(chunk: Buffer, maxPacketSize: number, onFrame: FrameHandler, caps: FramerCaps = NO_CAPS): Framer | null {
    const pos = scan(chunk, false, maxPacketSize, caps, onFrame)
    if (pos === chunk.length) return null
    const f = new Framer(maxPacketSize, caps)
    f.#keep(chunk, pos, false)
    return f
  }

  /** Feeds bytes; calls onFrame for every whole packet. Throws MqttError on bad framing. */
  push(chunk: Buffer, onFrame: FrameHandler): void {
    let buf = chunk
    let owned = false
    if (this.#parts !== null) {
      this.#parts.push(chunk)
      this.#partsLen += chunk.length
      // a large packet arriving in many chunks is copied once, when it is complete
      if (this.#need > 0 && this.#partsLen < this.#need) return
      buf = Buffer.concat(this.#parts, this.#partsLen)
      owned = true
      this.#parts = null
      this.#partsLen = 0
      this.#need = 0
    }
    const pos = scan(buf, owned, this.#max, this.#caps, onFrame)
    if (pos < buf.length) this.#keep(buf, pos, owned)
  }

  /** Keeps buf[pos..] (an incomplete packet) as a copy of its own. */
  #keep(buf: Buffer, pos: number, owned: boolean): void {
    const rest = Buffer.from(buf.subarray(pos))
    this.#parts = [rest]
    this.#partsLen = rest.length
    this.#need = totalSize(rest)
    // a new packet started (not the same one re-parsed after joining its parts)
    if (!owned || pos > 0) this.#since = Date.now()
  }

  get buffered(): number {
    return this.#partsLen
  }

  /** When the incomplete packet (if buffered > 0) started to arrive (ms since the epoch). */
  get partialSince(): number {
    return this.#since
  }
}

const CONNECT = 1, PUBLISH = 3, AUTH = 15

/** Limits for packets other than PUBLISH, checked as soon as their length is read. */
export interface FramerCaps {
  /** CONNECT and AUTH: the packets sent before authentication completes (small: no login, no memory). */
  readonly maxConnectPacketSize: number
  /** Every other packet but PUBLISH (SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, acks): each is decoded in
   * one go on the event loop, so its size bounds the time it takes. */
  readonly maxControlPacketSize: number
}

const NO_CAPS: FramerCaps = { maxConnectPacketSize: Infinity, maxControlPacketSize: Infinity }

/** Throws when a packet of `total` bytes passes the cap for its type. */
function overCap(header: number, total: number, caps: FramerCaps): void {
  const type = header >> 4
  if (type === CONNECT || type === AUTH) {
    if (total > caps.maxConnectPacketSize) throw new MqttError(RC.PACKET_TOO_LARGE, `${type === CONNECT ? 'CONNECT' : 'AUTH'} of ${total} bytes exceeds limits.maxConnectPacketSize ${caps.maxConnectPacketSize}`)
  } else if (type !== PUBLISH && total > caps.maxControlPacketSize) {
    throw new MqttError(RC.PACKET_TOO_LARGE, `packet of type ${type} and ${total} bytes exceeds limits.maxControlPacketSize ${caps.maxControlPacketSize}`)
  }
}

/** Total size of the packet starting at buf[0] once its remaining length is complete, else 0. */
function totalSize(buf: Buffer): number {
  const v = readVarint(buf, 1, buf.length)
  return v === null ? 0 : v[1] + v[0]
}

/**
 * Calls onFrame for every whole packet in buf; returns where the incomplete rest starts
 * (buf.length when there is none). Throws MqttError on bad framing.
 */
function scan(buf: Buffer, owned: boolean, max: number, caps: FramerCaps, onFrame: FrameHandler): number {
  const len = buf.length
  let pos = 0
  while (pos < len) {
    if (len - pos < 2) break
    const header = buf[pos]!
    let mult = 1
    let remaining = 0
    let i = pos + 1
    let complete = false
    for (let n = 0; n < 4; n++) {
      if (i >= len) break
      const b = buf[i++]!
      remaining += (b & 0x7f) * mult
      mult *= 128
      if ((b & 0x80) === 0) { complete = true; break }
      // spec 1.5.5: a Variable Byte Integer has at most four bytes
      if (n === 3) throw new MqttError(RC.MALFORMED_PACKET, 'malformed remaining length (more than 4 bytes)')
    }
    if (!complete) break
    const total = i - pos + remaining
    // spec 3.2.2.3.6: reject a packet larger than our Maximum Packet Size before buffering it
    if (total > max) {
      throw new MqttError(RC.PACKET_TOO_LARGE, `packet of ${total} bytes exceeds maximum packet size ${max}`)
    }
    if (total > caps.maxConnectPacketSize || total > caps.maxControlPacketSize) overCap(header, total, caps)
    if (len - i < remaining) break
    onFrame.onFrame(header, buf, i, i + remaining, owned)
    pos = i + remaining
  }
  return pos
}

import { MqttError, RC } from './reason-codes.ts'

/** Receives each complete MQTT control packet: the first header byte and the variable header +
 * payload. An object, not a closure, so a connection needs no per-instance function. */
export interface FrameHandler {
  onFrame(header: number, body: Buffer): void
}

/**
 * Incremental framer: turns a byte stream into whole packets. It checks the remaining length
 * against the maximum packet size as soon as the length is known, before buffering the body.
 */
export class Framer {
  #pending: Buffer | null = null
  #max: number

  constructor(maxPacketSize: number) {
    this.#max = maxPacketSize
  }

  set maxPacketSize(n: number) {
    this.#max = n
  }

  /** Feeds bytes; calls onFrame for every whole packet. Throws MqttError on bad framing. */
  push(chunk: Buffer, onFrame: FrameHandler): void {
    let buf = chunk
    if (this.#pending !== null) {
      buf = Buffer.concat([this.#pending, chunk])
      this.#pending = null
    }
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
      if (total > this.#max) {
        throw new MqttError(RC.PACKET_TOO_LARGE, `packet of ${total} bytes exceeds maximum packet size ${this.#max}`)
      }
      if (len - i < remaining) break
      onFrame.onFrame(header, buf.subarray(i, i + remaining))
      pos = i + remaining
    }
    if (pos < len) this.#pending = Buffer.from(buf.subarray(pos))
  }

  get buffered(): number {
    return this.#pending?.length ?? 0
  }
}

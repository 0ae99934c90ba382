/**
 * Load generator pieces on top of the raw client: subscribers that count deliveries, record
 * latency from the send time stamped in the payload and acknowledge QoS 1/2 (replies coalesced
 * per chunk), and publishers that write batches of stamped PUBLISH packets in one write.
 */
import { Client } from './client.ts'
import { ackPacket, publishPayloadAt, publishTemplate, type PublishTemplate, type QoS, type Version } from './packets.ts'
import type { Histogram } from './stats.ts'

export interface Counter { received: number }

/**
 * A subscriber: counts PUBLISH, records now - stamp (when the payload holds 8 bytes), answers
 * QoS 1 with PUBACK and QoS 2 with PUBREC, PUBREL with PUBCOMP; replies go out once per chunk.
 * `afterData` runs after each chunk (e.g. to let publishers refill).
 */
export function subscriber(version: Version, counter: Counter, hist: Histogram | null, afterData: (() => void) | null = null): Client {
  const c = new Client()
  c.state.onPacket = (type, flags, buf, at, end) => {
    if (type === 3) {
      counter.received++
      const qos = (flags >> 1) & 3
      if (hist !== null || qos > 0) {
        const p = publishPayloadAt(buf, at, qos, version)
        if (hist !== null && end - p >= 8) hist.record((performance.now() - buf.readDoubleLE(p)) * 1000)
        if (qos > 0) {
          const idAt = at + 2 + ((buf[at]! << 8) | buf[at + 1]!)
          c.queue(ackPacket(qos === 1 ? 4 : 5, buf[idAt]!, buf[idAt + 1]!))
        }
      }
    } else if (type === 6) {
      c.queue(ackPacket(7, buf[at]!, buf[at + 1]!))
    }
  }
  c.state.afterData = () => { c.flush(); afterData?.() }
  return c
}

/**
 * n copies of a PUBLISH template, each with its payload stamped with the send time and (QoS > 0)
 * a packet id. `reuse`: a buffer this function returned earlier for the same template and n,
 * which the kernel has taken whole: only its stamps are rewritten (no 64 KiB copies).
 */
export function stampedBatch(t: PublishTemplate, n: number, nextId: (() => number) | null, reuse: Buffer | null = null): Buffer {
  const len = t.bytes.length
  const fresh = reuse === null || reuse.length !== n * len
  const buf = fresh ? Buffer.allocUnsafe(n * len) : reuse
  const stamp = t.bytes.length - t.payloadAt >= 8
  const now = performance.now()
  for (let i = 0; i < n; i++) {
    const o = i * len
    if (fresh) t.bytes.copy(buf, o)
    if (stamp) buf.writeDoubleLE(now, o + t.payloadAt)
    if (nextId !== null) buf.writeUInt16BE(nextId(), o + t.idAt)
  }
  return buf
}

/**
 * A QoS 1 or 2 publisher with a window of unacknowledged PUBLISH (a slot frees on PUBACK, or on
 * PUBCOMP for QoS 2; PUBREC is answered with PUBREL), that also stays at most `lead` messages
 * ahead of its subscriber so no broker queue overflows.
 */
export class WindowedPublisher {
  readonly client = new Client()
  readonly template: PublishTemplate
  window: number
  outstanding = 0
  sent = 0
  acked = 0
  running = true
  #nextId = 1

  constructor(topic: string, payload: Buffer, readonly qos: 1 | 2, version: Version, window: number, readonly lead: number, readonly counter: Counter) {
    this.template = publishTemplate(topic, payload, qos, version)
    this.window = window
    const c = this.client
    c.state.onPacket = (type, _flags, buf, at) => {
      if (type === 4 || type === 7) { this.outstanding--; this.acked++ }
      else if (type === 5) c.queue(ackPacket(6, buf[at]!, buf[at + 1]!))
    }
    c.state.afterData = () => { c.flush(); this.refill() }
    c.state.onDrain = () => this.refill()
  }

  /** Caps the window at the broker's Receive Maximum (v5) once connected. */
  connected(): void { this.window = Math.min(this.window, this.client.receiveMaximum) }

  refill(): void {
    if (!this.running || !this.client.ready || this.client.blocked) return
    const n = Math.min(this.window - this.outstanding, this.lead - (this.sent - this.counter.received))
    if (n <= 0) return
    this.outstanding += n
    this.sent += n
    this.client.write(stampedBatch(this.template, n, () => { const id = this.#nextId; this.#nextId = id === 65535 ? 1 : id + 1; return id }))
  }
}

export const payloadOf = (bytes: number) => Buffer.alloc(bytes, 0x61)
export type { QoS }

/**
 * The load generator's raw MQTT client: Bun sockets, an incremental packet splitter that hands
 * out (buffer, body offsets) without copying, and coalesced writes (replies produced while one
 * chunk is handled go out in one write at its end; what the kernel does not take is kept and
 * sent in `drain`).
 */
import type { Socket } from 'bun'
import { connackReceiveMaximum, connectPacket, DISCONNECT, subscribePacket, type ConnectOptions, type QoS, type Version } from './packets.ts'

/**
 * Called per packet: type (high nibble), flags (low nibble), the buffer and the body range.
 * A PUBLISH larger than what has arrived is handed out as soon as its first PEEK bytes are
 * there (`end` then covers only those: topic, packet id, properties, the payload's start) and
 * the rest is skipped unread, so 64 KiB payloads cost no copying in the generator.
 */
export type OnPacket = (type: number, flags: number, buf: Buffer, at: number, end: number) => void

export interface ClientState {
  /** Bytes of an incomplete packet (chunks kept apart until it is whole: no quadratic copying). */
  pending: Buffer[]
  pendingLen: number
  /** Total bytes the incomplete packet needs (0 while its length is not known yet). */
  need: number
  /** Bytes of a large PUBLISH still to be skipped. */
  skip: number
  backlog: Buffer[] | null
  out: Buffer[]
  onPacket: OnPacket
  /** After each chunk has been handled (flush replies, refill windows). */
  afterData: (() => void) | null
  onDrain: (() => void) | null
  waiters: { type: number; resolve: (body: Buffer) => void }[]
  closed: boolean
  onClose: (() => void) | null
}

let errorsShown = 0
const PEEK = 256

export class Client {
  socket!: Socket<ClientState>
  readonly state: ClientState
  version: Version = 4
  /** The broker's v5 Receive Maximum (65535 when it sent none). */
  receiveMaximum = 65535
  /** CONNACK accepted: publishing may start. */
  ready = false

  constructor(onPacket: OnPacket = () => {}) {
    this.state = { pending: [], pendingLen: 0, need: 0, skip: 0, backlog: null, out: [], onPacket, afterData: null, onDrain: null, waiters: [], closed: false, onClose: null }
  }

  /** True while bytes wait for `drain`: a publisher should not add more. */
  get blocked(): boolean { return this.state.backlog !== null }

  /** Writes now; what the kernel does not take is kept for `drain`. */
  write(b: Buffer): void {
    const s = this.state
    if (s.closed) return
    if (s.backlog !== null) { s.backlog.push(b); return }
    const n = this.socket.write(b)
    if (n < b.length) s.backlog = [b.subarray(Math.max(n, 0))]
  }

  /** Queues a reply; `flush()` sends everything queued in one write. */
  queue(b: Buffer): void { this.state.out.push(b) }

  flush(): void {
    const out = this.state.out
    if (out.length === 0) return
    this.state.out = []
    this.write(out.length === 1 ? out[0]! : Buffer.concat(out))
  }

  /** Resolves with the body of the next packet of this type (CONNACK 2, SUBACK 9). */
  expect(type: number, ms = 30_000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout waiting for packet type ${type}`)), ms)
      this.state.waiters.push({ type, resolve: (body) => { clearTimeout(t); resolve(body) } })
    })
  }

  async connect(port: number, o: ConnectOptions, host = '127.0.0.1'): Promise<void> {
    this.version = o.version
    this.socket = await Bun.connect<ClientState>({
      hostname: host, port, data: this.state,
      socket: {
        data: (s, chunk) => onData(s.data, chunk),
        drain: (s) => {
          const st = s.data
          if (st.backlog === null) return
          const b = st.backlog.length === 1 ? st.backlog[0]! : Buffer.concat(st.backlog)
          const n = s.write(b)
          st.backlog = n < b.length ? [b.subarray(Math.max(n, 0))] : null
          if (st.backlog === null) st.onDrain?.()
        },
        close: (s) => { s.data.closed = true; s.data.onClose?.() },
        error: (_s, e) => { if (errorsShown++ < 5) console.error('bench client error:', e) },
      },
    })
    const acked = this.expect(2)
    this.write(connectPacket(o))
    const body = await acked
    const rc = body[1]!
    if (rc !== 0) throw new Error(`CONNACK refused ${o.clientId}: 0x${rc.toString(16)}`)
    this.receiveMaximum = connackReceiveMaximum(body, o.version)
    this.ready = true
  }

  async subscribe(filter: string, qos: QoS, packetId = 1): Promise<void> {
    const acked = this.expect(9)
    this.write(subscribePacket(filter, qos, packetId, this.version))
    const body = await acked
    const granted = body[body.length - 1]!
    if (granted >= 0x80) throw new Error(`SUBACK refused ${filter}: 0x${granted.toString(16)}`)
  }

  /** Clean DISCONNECT (a persistent session stays), then waits for the close. */
  async disconnect(): Promise<void> {
    if (this.state.closed) return
    const closed = new Promise<void>((r) => { this.state.onClose = r })
    this.state.backlog = null
    this.write(DISCONNECT)
    this.socket.end()
    await Promise.race([closed, Bun.sleep(5000)])
  }

  /** Abrupt close (used after a measurement: nothing more to say). */
  close(): void {
    if (this.state.closed) return
    this.state.closed = true
    this.socket.end()
  }
}

/** Splits a byte stream into packets without copying whole chunks. */
export function onData(st: ClientState, chunk: Buffer): void {
  let buf = chunk
  let pos = 0
  if (st.skip > 0) {
    if (chunk.length <= st.skip) { st.skip -= chunk.length; return }
    pos = st.skip
    st.skip = 0
  } else if (st.pendingLen > 0) {
    st.pending.push(chunk)
    st.pendingLen += chunk.length
    if (st.pendingLen < st.need) return
    buf = Buffer.concat(st.pending, st.pendingLen)
    st.pending = []
    st.pendingLen = 0
  }
  const n = buf.length
  st.need = 0
  while (pos + 2 <= n) {
    let len = 0, mult = 1, i = pos + 1, ok = false
    while (i < n && i < pos + 5) {
      const b = buf[i++]!
      len += (b & 0x7f) * mult
      mult *= 128
      if ((b & 0x80) === 0) { ok = true; break }
    }
    const first = buf[pos]!
    const type = first >> 4
    if (ok && i + len > n && type === 3 && n - i >= PEEK) {
      st.onPacket(type, first & 0x0f, buf, i, n)
      st.skip = i + len - n
      pos = n
      break
    }
    if (!ok || i + len > n) { st.need = !ok ? 0 : type === 3 ? Math.min(len, PEEK) + i - pos : i + len - pos; break }
    st.onPacket(type, first & 0x0f, buf, i, i + len)
    if (st.waiters.length > 0 && st.waiters[0]!.type === type) st.waiters.shift()!.resolve(Buffer.from(buf.subarray(i, i + len)))
    pos = i + len
  }
  if (pos < n) {
    // a small rest is copied (so the chunk can be freed), a large one kept as a view
    st.pending = [n - pos > 65536 ? buf.subarray(pos) : Buffer.from(buf.subarray(pos))]
    st.pendingLen = n - pos
  }
  st.afterData?.()
}

/** Connects many clients with bounded concurrency (a burst of thousands overflows the backlog). */
export async function connectAll<T>(n: number, make: (i: number) => Promise<T>, concurrency = 50): Promise<T[]> {
  const out: T[] = new Array(n)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, async () => {
    while (next < n) { const i = next++; out[i] = await make(i) }
  }))
  return out
}

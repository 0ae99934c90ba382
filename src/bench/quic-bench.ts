/**
 * `vmqtt bench --quic`: limits of MQTT over QUIC against a running broker. Measures
 *   1. connections per second (QUIC + TLS 1.3 handshake, CONNECT, CONNACK; 20 in flight),
 *   2. QoS 0 throughput on one connection (a client publishing to its own subscription, at most
 *      `window` messages in flight so nothing queues without bound),
 *   3. the same with 100 / 500 / 1000 other clients connected and idle, and the aggregate when
 *      all of them publish to themselves at once.
 * The clients run in this process on node:quic: on a small machine they share the CPU with the
 * broker, so the numbers are a floor for the broker, not a ceiling.
 */
import { QuicMqttClient, type QuicClientOptions } from '../transport/quic-client.ts'

export interface QuicBenchOptions {
  host: string
  port: number
  tls: QuicClientOptions
  /** Connected-client counts to measure with (default 100, 500, 1000). */
  clients: number[]
  seconds: number
  /** Connections opened for the connections-per-second figure. */
  connections: number
  payload: number
  window: number
  out: (line: string) => void
}

export interface QuicBenchResult {
  connectionsPerSecond: number
  oneConnection: Rate
  withClients: { clients: number; idleOthers: Rate; allPublishing: Rate }[]
}

interface Rate { msgsPerSecond: number; mbPerSecond: number }

const enc = new TextEncoder()
const str = (s: string): number[] => { const b = enc.encode(s); return [b.length >> 8, b.length & 255, ...b] }
function frame(header: number, body: number[] | Uint8Array): Uint8Array {
  const len: number[] = []
  let n = body.length
  do { let d = n % 128; n = Math.floor(n / 128); if (n > 0) d |= 128; len.push(d) } while (n > 0)
  const out = new Uint8Array(1 + len.length + body.length)
  out[0] = header
  out.set(len, 1)
  out.set(body, 1 + len.length)
  return out
}
const connectPacket = (id: string) => frame(0x10, [...str('MQTT'), 4, 0x02, 0, 60, ...str(id)])
const subscribePacket = (topic: string) => frame(0x82, [0, 1, ...str(topic), 0])
const publishPacket = (topic: string, payload: Uint8Array) => frame(0x30, [...str(topic), ...payload])

/** One benchmark client: counts whole packets by type as they arrive. */
class BenchClient {
  readonly q: QuicMqttClient
  received = 0
  #pending: Uint8Array = new Uint8Array(0)
  #waiters: { type: number; resolve: () => void }[] = []
  onPublish: () => void = () => {}

  private constructor(q: QuicMqttClient) {
    this.q = q
    q.ondata = (chunk) => this.#feed(chunk)
    q.onclose = () => { for (const w of this.#waiters) w.resolve() }
  }

  static async open(o: QuicBenchOptions, id: string, shared: boolean): Promise<BenchClient> {
    const c = new BenchClient(await QuicMqttClient.connect(o.host, o.port, { ...o.tls, sharedEndpoint: shared }))
    const ack = c.next(2)
    c.q.write(connectPacket(id))
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([ack, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`bench client ${id}: no CONNACK within 10 s`)), 10_000) })])
      .finally(() => clearTimeout(timer))
    if (c.q.closed) throw new Error(`bench client ${id}: closed before CONNACK`)
    return c
  }

  /** Resolves on the next packet of this type, or when the connection is (or gets) closed. */
  next(type: number): Promise<void> {
    if (this.q.closed) return Promise.resolve()
    return new Promise((resolve) => this.#waiters.push({ type, resolve }))
  }

  #feed(chunk: Uint8Array): void {
    const buf = this.#pending.length === 0 ? chunk : concat(this.#pending, chunk)
    let at = 0
    for (;;) {
      let len = 0, mult = 1, i = at + 1, done = false
      while (i < buf.length && i < at + 5) { const d = buf[i++]!; len += (d & 127) * mult; mult *= 128; if ((d & 128) === 0) { done = true; break } }
      if (!done || i + len > buf.length) break
      const type = buf[at]! >> 4
      at = i + len
      if (type === 3) { this.received++; this.onPublish() }
      const w = this.#waiters.findIndex((x) => x.type === type)
      if (w >= 0) this.#waiters.splice(w, 1)[0]!.resolve()
    }
    this.#pending = at === buf.length ? new Uint8Array(0) : buf.slice(at)
  }
}

const concat = (a: Uint8Array, b: Uint8Array) => { const o = new Uint8Array(a.length + b.length); o.set(a); o.set(b, a.length); return o }

/** Publishes QoS 0 to its own subscription for `ms`, keeping at most `window` messages in flight. */
async function selfPublish(clients: BenchClient[], o: QuicBenchOptions, ms: number): Promise<Rate> {
  let lost = 0
  const payload = new Uint8Array(o.payload).fill(0x61)
  const runs = clients.map(async (c, i) => {
    const topic = `bench/quic/${i}/${Math.random().toString(36).slice(2)}`
    const acked = c.next(9)
    c.q.write(subscribePacket(topic))
    let timer: ReturnType<typeof setTimeout> | undefined
    const ok = await Promise.race([acked.then(() => !c.q.closed), new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), 10_000) })])
    clearTimeout(timer)
    if (!ok) { lost++; return 0 }
    const msg = publishPacket(topic, payload)
    const start = c.received
    let sent = 0
    // each message that comes back frees a slot in the window
    const pump = () => {
      while (sent - (c.received - start) < o.window && !c.q.closed) {
        sent++
        if (!c.q.write(msg)) return
      }
    }
    c.onPublish = pump
    c.q.ondrain = pump
    pump()
    await new Promise((resolve) => setTimeout(resolve, ms))
    c.onPublish = () => {}
    c.q.ondrain = () => {}
    return c.received - start
  })
  const counts = await Promise.all(runs)
  const total = counts.reduce((a, b) => a + b, 0)
  if (lost > 0) o.out(`  (${lost} of ${clients.length} clients got no SUBACK within 10 s or were closed: not counted)`)
  const size = publishPacket('bench/quic/0/xxxxxxxxxxx', payload).length
  return { msgsPerSecond: Math.round(total / (ms / 1000)), mbPerSecond: +((total * size) / (ms / 1000) / 1e6).toFixed(2) }
}

export async function runQuicBench(o: QuicBenchOptions): Promise<QuicBenchResult> {
  // a stalled QUIC promise must not let the process end silently with half a report
  const alive = setInterval(() => {}, 1000)
  try {
    return await run(o)
  } finally {
    clearInterval(alive)
  }
}

async function run(o: QuicBenchOptions): Promise<QuicBenchResult> {
  // client ids unique to this run: two benches against one broker must not take over each other's sessions
  const tag = Math.random().toString(36).slice(2, 8)
  const ms = o.seconds * 1000
  // 1. connections per second
  let opened = 0
  const t0 = performance.now()
  const conns: BenchClient[] = []
  await Promise.all(Array.from({ length: 20 }, async (_, w) => {
    while (opened < o.connections) {
      opened++
      conns.push(await BenchClient.open(o, `bench-${tag}-conn-${w}-${opened}`, false))
    }
  }))
  const connectionsPerSecond = Math.round(conns.length / ((performance.now() - t0) / 1000))
  o.out(`connections/s (QUIC handshake + CONNECT/CONNACK, 20 in flight): ${connectionsPerSecond}`)
  await Promise.all(conns.map((c) => c.q.close()))

  // 2. one connection
  const one = await BenchClient.open(o, `bench-${tag}-one`, false)
  const oneConnection = await selfPublish([one], o, ms)
  o.out(`one connection, QoS 0 to itself (${o.payload} B payload): ${oneConnection.msgsPerSecond} msg/s, ${oneConnection.mbPerSecond} MB/s`)

  // 3. with N clients connected
  const withClients: QuicBenchResult['withClients'] = []
  for (const n of o.clients) {
    // a fresh crowd per size: growing one crowd after a publishing phase stalled node:quic's
    // client side in Bun 1.4.4 (a connect that never settled, see the README)
    const crowd: BenchClient[] = []
    while (crowd.length < n) {
      const batch = Math.min(50, n - crowd.length)
      crowd.push(...await Promise.all(Array.from({ length: batch }, (_, i) => BenchClient.open(o, `bench-${tag}-${n}-${crowd.length + i}`, false))))
    }
    const idleOthers = await selfPublish([one], o, ms)
    const allPublishing = await selfPublish(crowd, { ...o, window: Math.max(4, Math.floor(o.window / 10)) }, ms)
    withClients.push({ clients: n, idleOthers, allPublishing })
    o.out(`${n} clients connected: one publisher ${idleOthers.msgsPerSecond} msg/s; all ${n} publishing ${allPublishing.msgsPerSecond} msg/s (${allPublishing.mbPerSecond} MB/s)`)
    await Promise.all(crowd.map((c) => c.q.close()))
  }
  await one.q.close()
  return { connectionsPerSecond, oneConnection, withClients }
}

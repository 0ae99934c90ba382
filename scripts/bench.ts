#!/usr/bin/env bun
/**
 * First benchmark: QoS 0 fan-in and fan-out messages/s. The load generator is raw MQTT over
 * Bun sockets with coalesced writes, in this process; the broker runs as a child process
 * (vmqtt from source by default) so the two do not share an event loop.
 *
 *   bun scripts/bench.ts [--duration 5] [--warmup 1] [--runs 3] [--target host:port] [--version 4|5]
 *
 * With --target, an already running broker is measured instead (e.g. Mosquitto on 1883).
 * Output: one JSON line per scenario and run, then a summary with medians.
 */
import type { Socket } from 'bun'
import { parseArgs } from 'node:util'
import { join } from 'node:path'

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    runs: { type: 'string', default: '3' },
    target: { type: 'string' },
    version: { type: 'string', default: '4' },
    scenarios: { type: 'string', default: 'fan-in,fan-out' },
  },
})
const DURATION = Number(args.duration) * 1000
const WARMUP = Number(args.warmup) * 1000
const RUNS = Number(args.runs)
const VERSION = Number(args.version) as 4 | 5

function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId)
  const v5 = VERSION === 5
  const body = Buffer.concat([
    Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, VERSION, 0x02, 0, 60]),
    v5 ? Buffer.from([0]) : Buffer.alloc(0),
    Buffer.from([id.length >> 8, id.length & 0xff]), id,
  ])
  return Buffer.concat([Buffer.from([0x10, body.length]), body])
}

function publishPacket(topic: string, payload: Buffer): Buffer {
  const t = Buffer.from(topic)
  const props = VERSION === 5 ? 1 : 0
  const len = 2 + t.length + props + payload.length
  const head = len < 128 ? Buffer.from([0x30, len]) : Buffer.from([0x30, (len & 0x7f) | 0x80, len >> 7])
  return Buffer.concat([head, Buffer.from([t.length >> 8, t.length & 0xff]), t, props ? Buffer.from([0]) : Buffer.alloc(0), payload])
}

function subscribePacket(filter: string): Buffer {
  const f = Buffer.from(filter)
  const props = VERSION === 5 ? 1 : 0
  const body = Buffer.concat([Buffer.from([0, 1]), props ? Buffer.from([0]) : Buffer.alloc(0), Buffer.from([f.length >> 8, f.length & 0xff]), f, Buffer.from([0])])
  return Buffer.concat([Buffer.from([0x82, body.length]), body])
}

interface Client {
  socket: Socket<ClientState>
  state: ClientState
}
interface ClientState {
  publishes: number
  acks: number
  pending: Buffer | null
  waiters: (() => void)[]
  backlog: Uint8Array | null
}

/** Counts PUBLISH packets in a byte stream (type 3), and CONNACK/SUBACK as acks. */
function count(state: ClientState, chunk: Buffer): void {
  let buf = state.pending ? Buffer.concat([state.pending, chunk]) : chunk
  let pos = 0
  while (pos + 2 <= buf.length) {
    let len = 0, mult = 1, i = pos + 1, ok = false
    while (i < buf.length) {
      const b = buf[i++]!
      len += (b & 0x7f) * mult
      mult *= 128
      if ((b & 0x80) === 0) { ok = true; break }
    }
    if (!ok || i + len > buf.length) break
    const type = buf[pos]! >> 4
    if (type === 3) state.publishes++
    else if (type === 2 || type === 9) { state.acks++; state.waiters.shift()?.() }
    pos = i + len
  }
  state.pending = pos < buf.length ? Buffer.from(buf.subarray(pos)) : null
}

async function client(host: string, port: number, clientId: string): Promise<Client> {
  const state: ClientState = { publishes: 0, acks: 0, pending: null, waiters: [], backlog: null }
  const socket = await Bun.connect<ClientState>({
    hostname: host, port, data: state,
    socket: {
      data: (s, chunk) => count(s.data, chunk),
      drain: (s) => {
        const b = s.data.backlog
        if (b) { const n = s.write(b); s.data.backlog = n < b.length ? b.subarray(n) : null }
      },
    },
  })
  const acked = new Promise<void>((r) => state.waiters.push(r))
  socket.write(connectPacket(clientId))
  await acked
  return { socket, state }
}

async function subscribe(c: Client, filter: string): Promise<void> {
  const acked = new Promise<void>((r) => c.state.waiters.push(r))
  c.socket.write(subscribePacket(filter))
  await acked
}

/** Publishes batches while the receivers lag by less than `window` messages. */
function pump(pubs: Client[], batch: Buffer, perBatch: number, received: () => number, fanout: number, window: number): { stop: () => void; sent: () => number } {
  let sent = 0
  let stopped = false
  const tick = () => {
    if (stopped) return
    for (const p of pubs) {
      if (p.state.backlog !== null) continue
      if ((sent * fanout) - received() > window * fanout) break
      const n = p.socket.write(batch)
      if (n < batch.length) p.state.backlog = batch.subarray(Math.max(n, 0))
      sent += perBatch
    }
    setImmediate(tick)
  }
  tick()
  return { stop: () => { stopped = true }, sent: () => sent }
}

async function measure(name: string, host: string, port: number, nPub: number, nSub: number, filter: string): Promise<number> {
  const tag = `${name}-${Date.now().toString(36)}`
  const subs: Client[] = []
  for (let i = 0; i < nSub; i++) {
    const c = await client(host, port, `${tag}-s${i}`)
    await subscribe(c, filter)
    subs.push(c)
  }
  const pubs: Client[] = []
  for (let i = 0; i < nPub; i++) pubs.push(await client(host, port, `${tag}-p${i}`))
  const perBatch = 100
  const one = publishPacket(`bench/${tag}/t`, Buffer.alloc(16, 0x61))
  const batch = Buffer.concat(Array.from({ length: perBatch }, () => one))
  const received = () => subs.reduce((a, s) => a + s.state.publishes, 0)
  const p = pump(pubs, batch, perBatch, received, nSub, 20_000)
  await Bun.sleep(WARMUP)
  const r0 = received()
  const t0 = performance.now()
  await Bun.sleep(DURATION)
  const rate = (received() - r0) / ((performance.now() - t0) / 1000)
  p.stop()
  for (const c of [...subs, ...pubs]) c.socket.end()
  return rate
}

async function startVmqtt(): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = Bun.spawn([process.execPath, join(import.meta.dir, '..', 'src', 'main.ts')], {
    env: { ...process.env, VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_ADMIN_PORT: 'off', VMQTT_SYS_INTERVAL: '0', VMQTT_LOG_LEVEL: 'info' },
    stdout: 'pipe', stderr: 'inherit',
  })
  const reader = child.stdout.getReader()
  let text = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) throw new Error('vmqtt exited before listening')
    text += new TextDecoder().decode(value)
    const m = text.match(/"msg":"mqtt listening".*?"port":(\d+)/)
    if (m) return { port: Number(m[1]), stop: async () => { child.kill('SIGTERM'); await child.exited } }
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

let host = '127.0.0.1', port = 0, stop = async () => {}
if (args.target) {
  const [h, p] = args.target.split(':')
  host = h!
  port = Number(p)
} else {
  const b = await startVmqtt()
  port = b.port
  stop = b.stop
}
const scenarios: Record<string, [number, number, string]> = {
  'fan-in': [8, 1, 'bench/#'],
  'fan-out': [1, 100, 'bench/#'],
}
const summary: Record<string, unknown>[] = []
for (const name of args.scenarios!.split(',')) {
  const sc = scenarios[name]
  if (!sc) throw new Error(`unknown scenario ${name}`)
  const rates: number[] = []
  for (let r = 0; r < RUNS; r++) {
    const rate = await measure(name, host, port, sc[0], sc[1], sc[2])
    rates.push(rate)
    console.log(JSON.stringify({ broker: args.target ?? 'vmqtt', scenario: name, run: r + 1, version: VERSION, msgsPerSec: Math.round(rate) }))
  }
  summary.push({ scenario: name, median: Math.round(median(rates)), min: Math.round(Math.min(...rates)), max: Math.round(Math.max(...rates)) })
}
await stop()
console.table(summary)
process.exit(0)

#!/usr/bin/env bun
/**
 * Persistence benchmark (issue 3), in one run:
 *
 * 1. QoS 1 messages/s end to end with persistent subscribers, against vmqtt with the SQLite
 *    store in `fsync` and in `process` mode, vmqtt with the memory store, and Mosquitto 2 with
 *    `persistence true`. Shape: P publisher/subscriber pairs; publisher i (clean session)
 *    publishes QoS 1 to bench/<run>/<i>, subscriber i (clean session 0 / v5 session expiry,
 *    subscribed with QoS 1) receives and PUBACKs them. Each publisher keeps up to --window
 *    unacknowledged PUBLISH in flight (so group commit can batch) and runs at most --lead
 *    messages ahead of its subscriber (so no broker queue overflows and drops). Counted: the
 *    subscribers' deliveries per second (end to end) and the publishers' PUBACKs per second.
 *    Every broker starts fresh (empty data dir) for every run; runs are interleaved across
 *    brokers; warm-up, fixed duration, median of --runs with min and max.
 * 2. Restart time of vmqtt (sqlite, fsync): --sessions persistent sessions with one
 *    subscription each (restart/<i>), --queued QoS 1 messages published to them while they are
 *    offline, SIGTERM, then the time from spawn to the "mqtt listening" log line, and until
 *    one reconnecting client has received all its queued messages.
 *
 * The load generator is raw MQTT over Bun sockets with coalesced writes, in this process;
 * brokers run as child processes. Output: JSON lines, then a markdown table.
 *
 *   bun scripts/bench-persistence.ts [--duration 10] [--warmup 2] [--runs 3] [--pairs 10]
 *     [--window 100] [--lead 500] [--payload 64] [--version 4|5] [--brokers fsync,process,memory,mosquitto]
 *     [--sessions 10000] [--queued 100000] [--restart-runs 3] [--no-restart] [--no-throughput]
 */
import type { Socket, Subprocess } from 'bun'
import { mkdtempSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    runs: { type: 'string', default: '3' },
    pairs: { type: 'string', default: '10' },
    window: { type: 'string', default: '100' },
    lead: { type: 'string', default: '500' },
    payload: { type: 'string', default: '64' },
    version: { type: 'string', default: '4' },
    brokers: { type: 'string', default: 'fsync,process,memory,mosquitto' },
    sessions: { type: 'string', default: '10000' },
    queued: { type: 'string', default: '100000' },
    'restart-runs': { type: 'string', default: '3' },
    'no-restart': { type: 'boolean', default: false },
    'no-throughput': { type: 'boolean', default: false },
  },
})
const DURATION = Number(args.duration) * 1000
const WARMUP = Number(args.warmup) * 1000
const RUNS = Number(args.runs)
const PAIRS = Number(args.pairs)
const WINDOW = Number(args.window)
const LEAD = Number(args.lead)
const PAYLOAD = Buffer.alloc(Number(args.payload), 0x61)
const VERSION = Number(args.version) as 4 | 5
const V5 = VERSION === 5
const SESSION_EXPIRY = 3600
const ROOT = join(import.meta.dir, '..')

// ---------------------------------------------------------------- packets (independent of src/codec)

function varint(n: number): number[] {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return out
}

function packet(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first, ...varint(body.length)]), body])
}

const str = (s: string) => { const b = Buffer.from(s); return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]) }

/** CONNECT; a persistent client uses clean session 0 (v3.1.1) or clean start 0 + session expiry (v5). */
function connectPacket(clientId: string, persistent: boolean): Buffer {
  const flags = persistent ? 0x00 : 0x02
  const props = !V5 ? Buffer.alloc(0)
    : persistent ? Buffer.from([5, 0x11, (SESSION_EXPIRY >>> 24) & 0xff, (SESSION_EXPIRY >> 16) & 0xff, (SESSION_EXPIRY >> 8) & 0xff, SESSION_EXPIRY & 0xff])
    : Buffer.from([0])
  return packet(0x10, Buffer.concat([Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, VERSION, flags, 0, 60]), props, str(clientId)]))
}

function subscribePacket(filter: string, packetId: number): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([packetId >> 8, packetId & 0xff]), V5 ? Buffer.from([0]) : Buffer.alloc(0), str(filter), Buffer.from([1])]))
}

/** A QoS 1 PUBLISH with packet id 0; returns the bytes and the offset of the packet id. */
function publishTemplate(topic: string, payload: Buffer): { bytes: Buffer; idAt: number } {
  const t = str(topic)
  const body = Buffer.concat([t, Buffer.from([0, 0]), V5 ? Buffer.from([0]) : Buffer.alloc(0), payload])
  const bytes = packet(0x32, body)
  return { bytes, idAt: bytes.length - body.length + t.length }
}

const DISCONNECT = Buffer.from([0xe0, 0])

// ---------------------------------------------------------------- raw client

type OnPacket = (type: number, flags: number, body: Buffer) => void

interface ClientState {
  pending: Buffer | null
  backlog: Uint8Array | null
  out: Buffer[]
  onPacket: OnPacket
  afterData: (() => void) | null
  waiters: { type: number; resolve: () => void }[]
  closed: boolean
  onClose: (() => void) | null
}

class Client {
  socket!: Socket<ClientState>
  readonly state: ClientState

  constructor(onPacket: OnPacket = () => {}) {
    this.state = { pending: null, backlog: null, out: [], onPacket, afterData: null, waiters: [], closed: false, onClose: null }
  }

  /** Queues bytes; they go out with one write at the end of the current callback (or now). */
  write(b: Buffer): void {
    const s = this.state
    if (s.backlog !== null) { s.backlog = Buffer.concat([s.backlog, b]); return }
    const n = this.socket.write(b)
    if (n < b.length) s.backlog = b.subarray(Math.max(n, 0))
  }

  /** Resolves when a packet of this type arrives (CONNACK 2, SUBACK 9). */
  expect(type: number, ms = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout waiting for packet type ${type}`)), ms)
      this.state.waiters.push({ type, resolve: () => { clearTimeout(t); resolve() } })
    })
  }

  async connect(port: number, clientId: string, persistent: boolean): Promise<void> {
    this.socket = await Bun.connect<ClientState>({
      hostname: '127.0.0.1', port, data: this.state,
      socket: {
        data: (s, chunk) => onData(s.data, chunk),
        drain: (s) => {
          const b = s.data.backlog
          if (b) { const n = s.write(b); s.data.backlog = n < b.length ? b.subarray(Math.max(n, 0)) : null }
        },
        close: (s) => { s.data.closed = true; s.data.onClose?.() },
        error: () => {},
      },
    })
    const acked = this.expect(2)
    this.write(connectPacket(clientId, persistent))
    await acked
  }

  async subscribe(filter: string): Promise<void> {
    const acked = this.expect(9)
    this.write(subscribePacket(filter, 1))
    await acked
  }

  /** Clean DISCONNECT (the session stays for a persistent client), then waits for the close. */
  async disconnect(): Promise<void> {
    if (this.state.closed) return
    const closed = new Promise<void>((r) => { this.state.onClose = r })
    this.write(DISCONNECT)
    this.socket.end()
    await Promise.race([closed, Bun.sleep(5000)])
  }
}

/** Splits a byte stream into packets; replies collected in state.out go out in one write. */
function onData(st: ClientState, chunk: Buffer): void {
  const buf = st.pending ? Buffer.concat([st.pending, chunk]) : chunk
  let pos = 0
  while (pos + 2 <= buf.length) {
    let len = 0, mult = 1, i = pos + 1, ok = false
    while (i < buf.length && i < pos + 5) {
      const b = buf[i++]!
      len += (b & 0x7f) * mult
      mult *= 128
      if ((b & 0x80) === 0) { ok = true; break }
    }
    if (!ok || i + len > buf.length) break
    const first = buf[pos]!
    const type = first >> 4
    st.onPacket(type, first & 0x0f, buf.subarray(i, i + len))
    if (st.waiters.length > 0 && st.waiters[0]!.type === type) st.waiters.shift()!.resolve()
    pos = i + len
  }
  st.pending = pos < buf.length ? Buffer.from(buf.subarray(pos)) : null
  st.afterData?.()
}

/** A subscriber's packet handler: counts PUBLISH and PUBACKs QoS 1/2 ones (coalesced). */
function subscriberHandler(counter: { received: number }, client: () => Client): OnPacket {
  return (type, flags, body) => {
    if (type !== 3) return
    counter.received++
    if (((flags >> 1) & 3) === 0) return
    const tl = (body[0]! << 8) | body[1]!
    client().state.out.push(Buffer.from([0x40, 2, body[2 + tl]!, body[3 + tl]!]))
  }
}

function flushOut(c: Client): void {
  const out = c.state.out
  if (out.length === 0) return
  c.state.out = []
  c.write(out.length === 1 ? out[0]! : Buffer.concat(out))
}

// ---------------------------------------------------------------- brokers

interface BrokerProc {
  name: string
  port: number
  dir: string
  child: Subprocess
  spawnedAt: number
  listeningAt: number
  log: string[]
  stop(): Promise<void>
}

const children = new Set<Subprocess>()
const dirs = new Set<string>()

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix))
  dirs.add(d)
  return d
}

/** Reads a child's stdout line by line (forever, so the pipe never fills) until `match` is seen. */
function watchLines(stream: ReadableStream<Uint8Array>, log: string[], match: (line: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not ready after 60 s; output:\n${log.slice(-20).join('\n')}`)), 60_000)
    const reader = stream.getReader()
    const dec = new TextDecoder()
    let text = '', found = false
    void (async () => {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) { clearTimeout(t); if (!found) reject(new Error(`exited before ready; output:\n${log.slice(-20).join('\n')}`)); return }
        text += dec.decode(value, { stream: true })
        let nl: number
        while ((nl = text.indexOf('\n')) >= 0) {
          const line = text.slice(0, nl)
          text = text.slice(nl + 1)
          if (log.length < 10_000) log.push(line)
          if (!found && match(line)) { found = true; clearTimeout(t); resolve(line) }
        }
      }
    })()
  })
}

async function stopChild(child: Subprocess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
  const t = setTimeout(() => child.kill('SIGKILL'), 30_000)
  await child.exited
  clearTimeout(t)
  children.delete(child)
}

async function startVmqtt(name: string, env: Record<string, string>, dir = tempDir('vmqtt-bench-')): Promise<BrokerProc> {
  const spawnedAt = performance.now()
  // investigations: BENCH_WRAP="bun wrap.ts" runs vmqtt through a script that gets the bun path
  // and src/main.ts as arguments (e.g. one that patches SqliteStore.commit to time commits)
  const wrap = process.env.BENCH_WRAP ? process.env.BENCH_WRAP.split(' ') : []
  const child = Bun.spawn([...wrap, process.execPath, join(ROOT, 'src', 'main.ts')], {
    env: {
      ...process.env, VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_ADMIN_PORT: 'off',
      VMQTT_SYS_INTERVAL: '0', VMQTT_LOG_LEVEL: 'info', VMQTT_DATA_DIR: dir, ...env,
    },
    stdin: 'ignore', stdout: 'pipe', stderr: 'inherit',
  })
  children.add(child)
  const log: string[] = []
  const line = await watchLines(child.stdout, log, (l) => l.includes('"mqtt listening"'))
  const listeningAt = performance.now()
  const port = Number(/"port":(\d+)/.exec(line)![1])
  return { name, port, dir, child, spawnedAt, listeningAt, log, stop: () => stopChild(child) }
}

async function freePort(): Promise<number> {
  const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = l.port
  l.stop(true)
  return port
}

/** Seconds between Mosquitto's snapshots of its in-memory state (its default is 1800). */
const MOSQUITTO_AUTOSAVE_INTERVAL = 1

async function startMosquitto(): Promise<BrokerProc> {
  const dir = tempDir('mosq-bench-')
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(conf, [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    // as root, mosquitto would drop to the user "mosquitto", who cannot write our temp dir
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    'persistence true',
    `persistence_location ${dir}/`,
    // mosquitto acknowledges before the snapshot: a crash loses up to this many seconds of
    // acknowledged messages (vmqtt acknowledges after the commit)
    `autosave_interval ${MOSQUITTO_AUTOSAVE_INTERVAL}`,
    'autosave_on_changes false',
    // the same windows as vmqtt's defaults (limits.maxInflight 100, limits.maxQueuedMessages 1000)
    'max_inflight_messages 100',
    'max_queued_messages 1000',
    'log_dest stderr',
    // "information" carries the "running" line we wait for (and one line per connect)
    'log_type error', 'log_type warning', 'log_type notice', 'log_type information',
    '',
  ].join('\n'))
  const spawnedAt = performance.now()
  // stderr is unbuffered (stdout to a pipe is not): its log lines arrive as they are written
  const child = Bun.spawn(['mosquitto', '-c', conf], { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' })
  children.add(child)
  const log: string[] = []
  await watchLines(child.stderr, log, (l) => / running$/.test(l))
  return { name: 'mosquitto', port, dir, child, spawnedAt, listeningAt: performance.now(), log, stop: () => stopChild(child) }
}

const BROKERS: Record<string, { label: string; start: () => Promise<BrokerProc> }> = {
  fsync: { label: 'vmqtt sqlite fsync', start: () => startVmqtt('fsync', { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DURABILITY: 'fsync' }) },
  process: { label: 'vmqtt sqlite process', start: () => startVmqtt('process', { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DURABILITY: 'process' }) },
  memory: { label: 'vmqtt memory', start: () => startVmqtt('memory', { VMQTT_DATA_STORE: 'memory' }) },
  mosquitto: { label: `mosquitto ${mosquittoVersion() ?? ''} persistence true`.replace('  ', ' '), start: startMosquitto },
}

function mosquittoVersion(): string | null {
  if (Bun.which('mosquitto') === null) return null
  const r = Bun.spawnSync(['mosquitto', '-h'])
  return /mosquitto version (\S+)/.exec(r.stdout.toString())?.[1] ?? '?'
}

// ---------------------------------------------------------------- throughput

interface Pair {
  pub: Client
  sub: Client
  template: Buffer
  idAt: number
  nextId: number
  outstanding: number
  sent: number
  acked: number
  counter: { received: number }
}

function refill(p: Pair, running: boolean): void {
  if (!running || p.pub.state.backlog !== null) return
  const n = Math.min(WINDOW - p.outstanding, LEAD - (p.sent - p.counter.received))
  if (n <= 0) return
  const len = p.template.length
  const buf = Buffer.allocUnsafe(n * len)
  for (let i = 0; i < n; i++) {
    p.template.copy(buf, i * len)
    buf.writeUInt16BE(p.nextId, i * len + p.idAt)
    p.nextId = p.nextId === 65535 ? 1 : p.nextId + 1
  }
  p.outstanding += n
  p.sent += n
  p.pub.write(buf)
}

interface RunResult { msgsPerSec: number; pubacksPerSec: number; perSecond: number[]; maxStallMs: number; sent: number; acked: number; received: number; missing: number; extra: number; dbBytes: number }

async function measureThroughput(b: BrokerProc, run: number): Promise<RunResult> {
  const tag = `${b.name}${run}-${Date.now().toString(36)}`
  let running = true
  // the longest time no subscriber received anything, while measuring (a stall of the broker)
  let measuring = false, lastDelivery = 0, maxStall = 0
  const pairs: Pair[] = []
  for (let i = 0; i < PAIRS; i++) {
    const counter = { received: 0 }
    let sub!: Client
    sub = new Client(subscriberHandler(counter, () => sub))
    await sub.connect(b.port, `${tag}-s${i}`, true)
    await sub.subscribe(`bench/${tag}/${i}`)
    const { bytes, idAt } = publishTemplate(`bench/${tag}/${i}`, PAYLOAD)
    const pair: Pair = { pub: new Client(), sub, template: bytes, idAt, nextId: 1, outstanding: 0, sent: 0, acked: 0, counter }
    pair.pub.state.onPacket = (type) => { if (type === 4) { pair.outstanding--; pair.acked++ } }
    pair.pub.state.afterData = () => refill(pair, running)
    sub.state.afterData = () => {
      if (measuring) {
        const now = performance.now()
        if (now - lastDelivery > maxStall) maxStall = now - lastDelivery
        lastDelivery = now
      }
      flushOut(sub)
      refill(pair, running)
    }
    await pair.pub.connect(b.port, `${tag}-p${i}`, false)
    pairs.push(pair)
  }
  const received = () => pairs.reduce((a, p) => a + p.counter.received, 0)
  const acked = () => pairs.reduce((a, p) => a + p.acked, 0)
  for (const p of pairs) refill(p, running)
  await Bun.sleep(WARMUP)
  const r0 = received(), a0 = acked(), t0 = performance.now()
  measuring = true
  lastDelivery = t0
  // per-second deliveries, to show stalls (checkpoints, garbage collection of rows)
  const perSecond: number[] = []
  let last = r0
  for (let t = 1000; t <= DURATION; t += 1000) {
    await Bun.sleep(t0 + t - performance.now())
    const r = received()
    perSecond.push(r - last)
    last = r
  }
  if (DURATION % 1000 > 0) await Bun.sleep(t0 + DURATION - performance.now())
  const r1 = received(), a1 = acked(), secs = (performance.now() - t0) / 1000
  running = false
  measuring = false
  // drain: every acknowledged message must reach its subscriber
  const deadline = performance.now() + 15_000
  while (performance.now() < deadline && pairs.some((p) => p.outstanding > 0 || p.counter.received < p.acked)) await Bun.sleep(20)
  const missing = pairs.reduce((a, p) => a + Math.max(0, p.acked - p.counter.received), 0)
  const extra = pairs.reduce((a, p) => a + Math.max(0, p.counter.received - p.sent), 0)
  const dbBytes = dirBytes(b.dir)
  await Promise.all(pairs.flatMap((p) => [p.pub.disconnect(), p.sub.disconnect()]))
  return {
    msgsPerSec: (r1 - r0) / secs, pubacksPerSec: (a1 - a0) / secs, perSecond, maxStallMs: Math.round(maxStall),
    sent: pairs.reduce((a, p) => a + p.sent, 0), acked: acked(), received: received(), missing, extra, dbBytes,
  }
}

function dirBytes(dir: string): number {
  let n = 0
  for (const f of readdirSync(dir)) { try { n += statSync(join(dir, f)).size } catch { /* gone */ } }
  return n
}

// ---------------------------------------------------------------- restart

interface Reconnect { connackMs: number; firstMsgMs: number; allMs: number; got: number }
interface RestartResult {
  run: number; listenMs: number; totalMs: number; restoredSessions: number; restoredQueued: number
  /** The first client to reconnect after the restart, and a second one right after it. */
  first: Reconnect; second: Reconnect
}

/** Connects a persistent session and times CONNACK, its first and its last queued message. */
async function reconnect(port: number, clientId: string, expected: number): Promise<Reconnect> {
  const counter = { received: 0 }
  let c!: Client
  c = new Client(subscriberHandler(counter, () => c))
  let firstAt = 0
  let all!: () => void
  const gotAll = new Promise<void>((r) => { all = r })
  c.state.afterData = () => {
    flushOut(c)
    if (counter.received > 0 && firstAt === 0) firstAt = performance.now()
    if (counter.received >= expected) all()
  }
  const t0 = performance.now()
  await c.connect(port, clientId, true)
  const connackAt = performance.now()
  await Promise.race([gotAll, Bun.sleep(30_000)])
  const t1 = performance.now()
  await c.disconnect()
  return { connackMs: connackAt - t0, firstMsgMs: firstAt > 0 ? firstAt - t0 : -1, allMs: t1 - t0, got: counter.received }
}

async function fillForRestart(b: BrokerProc, sessions: number, perSession: number): Promise<{ fillSecs: number; publishSecs: number }> {
  const t0 = performance.now()
  const BATCH = 500
  for (let start = 0; start < sessions; start += BATCH) {
    const batch: Client[] = []
    await Promise.all(Array.from({ length: Math.min(BATCH, sessions - start) }, async (_, k) => {
      const c = new Client()
      batch.push(c)
      await c.connect(b.port, `restart-${start + k}`, true)
      await c.subscribe(`restart/${start + k}`)
    }))
    await Promise.all(batch.map((c) => c.disconnect()))
  }
  const t1 = performance.now()
  // one publisher, QoS 1, window of 100, round-robin over the sessions' topics
  const pub = new Client()
  let outstanding = 0, sent = 0, acked = 0, nextId = 1
  const total = sessions * perSession
  const templates = Array.from({ length: sessions }, (_, i) => publishTemplate(`restart/${i}`, PAYLOAD))
  let done!: () => void
  const finished = new Promise<void>((r) => { done = r })
  const pump = () => {
    const parts: Buffer[] = []
    while (outstanding < WINDOW && sent < total) {
      const t = templates[sent % sessions]!
      const b = Buffer.from(t.bytes)
      b.writeUInt16BE(nextId, t.idAt)
      nextId = nextId === 65535 ? 1 : nextId + 1
      parts.push(b)
      outstanding++
      sent++
    }
    if (parts.length > 0) pub.write(Buffer.concat(parts))
  }
  pub.state.onPacket = (type) => { if (type === 4) { outstanding--; acked++ } }
  pub.state.afterData = () => { if (acked === total) done(); else pump() }
  await pub.connect(b.port, 'restart-publisher', false)
  pump()
  await finished
  await pub.disconnect()
  return { fillSecs: (t1 - t0) / 1000, publishSecs: (performance.now() - t1) / 1000 }
}

async function measureRestart(dir: string, run: number, clientIndex: number, perSession: number): Promise<RestartResult> {
  const b = await startVmqtt('restart', { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DURABILITY: 'fsync' }, dir)
  try {
    const listenMs = b.listeningAt - b.spawnedAt
    const restored = b.log.map((l) => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } }).find((o) => o.msg === 'sessions restored') ?? {}
    const first = await reconnect(b.port, `restart-${clientIndex}`, perSession)
    const totalMs = performance.now() - b.spawnedAt
    const second = await reconnect(b.port, `restart-${clientIndex + 1}`, perSession)
    return { run, listenMs, totalMs, restoredSessions: Number(restored.sessions ?? 0), restoredQueued: Number(restored.queued ?? 0), first, second }
  } finally {
    await b.stop()
  }
}

// ---------------------------------------------------------------- main

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const fmt = (n: number) => Math.round(n).toLocaleString('en-US')
const table: string[] = []

async function main(): Promise<void> {
  const meta = { loadavg: loadavg().map((x) => +x.toFixed(2)), bun: Bun.version, cpus: navigator.hardwareConcurrency, pairs: PAIRS, window: WINDOW, lead: LEAD, payload: PAYLOAD.length, version: VERSION, duration: DURATION / 1000, warmup: WARMUP / 1000, runs: RUNS }
  console.log(JSON.stringify({ bench: 'meta', ...meta }))
  if (!args['no-throughput']) {
    const skipped: string[] = []
    const names = args.brokers!.split(',').filter((n) => {
      if (!(n in BROKERS)) throw new Error(`unknown broker ${n}`)
      if (n === 'mosquitto' && mosquittoVersion() === null) {
        console.log(JSON.stringify({ bench: 'throughput', broker: 'mosquitto', skipped: 'mosquitto not found on PATH (apt-get install mosquitto)' }))
        skipped.push('Mosquitto skipped: `mosquitto` not found on PATH (Debian: apt-get install mosquitto).')
        return false
      }
      return true
    })
    const results = new Map<string, RunResult[]>(names.map((n) => [n, []]))
    for (let r = 1; r <= RUNS; r++) {
      for (const name of names) {
        const b = await BROKERS[name]!.start()
        try {
          const res = await measureThroughput(b, r)
          results.get(name)!.push(res)
          console.log(JSON.stringify({ bench: 'throughput', broker: name, run: r, ...res, msgsPerSec: Math.round(res.msgsPerSec), pubacksPerSec: Math.round(res.pubacksPerSec) }))
        } finally {
          await b.stop()
          rmSync(b.dir, { recursive: true, force: true })
          dirs.delete(b.dir)
        }
      }
    }
    table.push(`QoS 1, ${PAIRS} publishers -> ${PAIRS} persistent subscribers (one topic per pair), MQTT ${VERSION === 5 ? '5' : '3.1.1'}, ${PAYLOAD.length} B payload, window ${WINDOW}, ${DURATION / 1000} s after ${WARMUP / 1000} s warm-up, median of ${RUNS} (min-max); Bun ${Bun.version}, ${navigator.hardwareConcurrency} cores`, '')
    table.push('| broker | msgs/s end to end | min - max | PUBACKs/s | longest stall | lost |', '|---|---:|---:|---:|---:|---:|')
    for (const name of names) {
      const rs = results.get(name)!
      const m = rs.map((x) => x.msgsPerSec)
      const summary = { bench: 'throughput-summary', broker: name, median: Math.round(median(m)), min: Math.round(Math.min(...m)), max: Math.round(Math.max(...m)), pubacksMedian: Math.round(median(rs.map((x) => x.pubacksPerSec))), lost: rs.reduce((a, x) => a + x.missing, 0), maxStallMs: Math.max(...rs.map((x) => x.maxStallMs)) }
      console.log(JSON.stringify(summary))
      table.push(`| ${BROKERS[name]!.label} | ${fmt(summary.median)} | ${fmt(summary.min)} - ${fmt(summary.max)} | ${fmt(summary.pubacksMedian)} | ${fmt(summary.maxStallMs)} ms | ${summary.lost} |`)
    }
    table.push('', ...skipped.flatMap((n) => [n, '']))
  }
  if (!args['no-restart']) {
    const sessions = Number(args.sessions)
    const perSession = Math.max(1, Math.round(Number(args.queued) / sessions))
    // baseline: the same start with an empty data directory (Bun start, module loading, schema)
    const empty: number[] = []
    for (let r = 0; r < Number(args['restart-runs']); r++) {
      const e = await startVmqtt('empty', { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DURABILITY: 'fsync' })
      empty.push(e.listeningAt - e.spawnedAt)
      await e.stop()
      rmSync(e.dir, { recursive: true, force: true })
      dirs.delete(e.dir)
    }
    console.log(JSON.stringify({ bench: 'start-empty', listenMs: empty.map(Math.round) }))
    const dir = tempDir('vmqtt-restart-')
    const b = await startVmqtt('restart-fill', { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DURABILITY: 'fsync' }, dir)
    let fill: { fillSecs: number; publishSecs: number }
    try {
      fill = await fillForRestart(b, sessions, perSession)
    } finally {
      await b.stop()
    }
    const dbBytes = dirBytes(dir)
    console.log(JSON.stringify({ bench: 'restart-fill', sessions, queued: sessions * perSession, sessionsSecs: +fill.fillSecs.toFixed(2), publishSecs: +fill.publishSecs.toFixed(2), dbBytes }))
    const rr: RestartResult[] = []
    const runs = Number(args['restart-runs'])
    for (let r = 1; r <= runs; r++) {
      // a different client each time, so every restart still holds (almost) all queued messages
      const res = await measureRestart(dir, r, Math.floor(((r - 0.5) * sessions) / runs), perSession)
      rr.push(res)
      console.log(JSON.stringify({ bench: 'restart', ...res }, (_, v: unknown) => typeof v === 'number' ? Math.round(v) : v))
    }
    const mm = (f: (x: RestartResult) => number) => `${fmt(median(rr.map(f)))} (${fmt(Math.min(...rr.map(f)))} - ${fmt(Math.max(...rr.map(f)))})`
    table.push(`Restart, vmqtt sqlite fsync, ${fmt(sessions)} persistent sessions, ${fmt(sessions * perSession)} queued QoS 1 messages (database ${(dbBytes / 1048576).toFixed(1)} MiB), median of ${runs} (min - max)`, '')
    table.push(`| | spawn -> "mqtt listening" | first client: CONNECT -> all ${perSession} queued | second client: CONNECT -> all ${perSession} queued | spawn -> first client has all |`, '|---|---:|---:|---:|---:|')
    table.push(`| empty data dir | ${fmt(median(empty))} (${fmt(Math.min(...empty))} - ${fmt(Math.max(...empty))}) ms | | | |`)
    table.push(`| ${fmt(sessions)} sessions, ${fmt(sessions * perSession)} queued | ${mm((x) => x.listenMs)} ms | ${mm((x) => x.first.allMs)} ms | ${mm((x) => x.second.allMs)} ms | ${mm((x) => x.totalMs)} ms |`, '')
    const short = rr.filter((x) => x.first.got < perSession || x.second.got < perSession).length
    if (short > 0) table.push(`WARNING: in ${short} restart(s) a client got fewer than its ${perSession} queued messages (see the JSON lines).`, '')
  }
  console.log(JSON.stringify({ bench: 'end', loadavg: loadavg().map((x) => +x.toFixed(2)) }))
  console.log('')
  console.log(table.join('\n'))
}

async function cleanup(): Promise<void> {
  for (const c of children) { try { c.kill('SIGKILL') } catch { /* gone */ } }
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}

process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })
try {
  await main()
} finally {
  await cleanup()
}
process.exit(0)

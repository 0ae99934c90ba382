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
 * The load generator is raw MQTT over Bun sockets with coalesced writes (scripts/bench/, shared
 * with the benchmark suite scripts/bench.ts), in this process;
 * brokers run as child processes. Output: JSON lines, then a markdown table.
 *
 *   bun scripts/bench-persistence.ts [--duration 10] [--warmup 2] [--runs 3] [--pairs 10]
 *     [--window 100] [--lead 500] [--payload 64] [--version 4|5] [--brokers fsync,process,memory,mosquitto]
 *     [--sessions 10000] [--queued 100000] [--restart-runs 3] [--no-restart] [--no-throughput]
 */
import { loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { startMosquitto, startVmqtt, mosquittoVersion, type BrokerProc } from './bench/brokers.ts'
import { Client } from './bench/client.ts'
import { subscriber } from './bench/generator.ts'
import { publishTemplate } from './bench/packets.ts'
import { cleanup, tempDir } from './bench/proc.ts'
import { dirBytes, runPersistent, SESSION_EXPIRY, type PersistentResult } from './bench/scenarios/persistent.ts'

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

const BROKERS: Record<string, { label: string; start: () => Promise<BrokerProc> }> = {
  fsync: { label: 'vmqtt sqlite fsync', start: () => startVmqtt('fsync', false, { durable: true }) },
  process: { label: 'vmqtt sqlite process', start: () => startVmqtt('process', false, { durable: true, env: { VMQTT_DATA_DURABILITY: 'process' } }) },
  memory: { label: 'vmqtt memory', start: () => startVmqtt('memory', false) },
  mosquitto: { label: `mosquitto ${mosquittoVersion() ?? ''} persistence true`.replace('  ', ' '), start: () => startMosquitto({ durable: true }) },
}

// ---------------------------------------------------------------- throughput (scripts/bench/scenarios/persistent.ts)

type RunResult = PersistentResult

function measureThroughput(b: BrokerProc, run: number): Promise<RunResult> {
  return runPersistent(
    { broker: b, version: VERSION, warmupMs: WARMUP, durationMs: DURATION, tag: `${b.name}${run}-${Date.now().toString(36)}`, run, rate: 0, connections: 0, connProcs: 0 },
    { pairs: PAIRS, window: WINDOW, lead: LEAD, payload: PAYLOAD.length },
  )
}

// ---------------------------------------------------------------- restart

interface Reconnect { connackMs: number; firstMsgMs: number; allMs: number; got: number }
interface RestartResult {
  run: number; listenMs: number; totalMs: number; restoredSessions: number; restoredQueued: number
  /** The first client to reconnect after the restart, and a second one right after it. */
  first: Reconnect; second: Reconnect
}

const persistentSession = (clientId: string) => ({ clientId, version: VERSION, clean: false, sessionExpiry: SESSION_EXPIRY })

/** Connects a persistent session and times CONNACK, its first and its last queued message. */
async function reconnect(port: number, clientId: string, expected: number): Promise<Reconnect> {
  const counter = { received: 0 }
  let firstAt = 0
  let all!: () => void
  const gotAll = new Promise<void>((r) => { all = r })
  const c = subscriber(VERSION, counter, null, () => {
    if (counter.received > 0 && firstAt === 0) firstAt = performance.now()
    if (counter.received >= expected) all()
  })
  const t0 = performance.now()
  await c.connect(port, persistentSession(clientId))
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
      await c.connect(b.port, persistentSession(`restart-${start + k}`))
      await c.subscribe(`restart/${start + k}`, 1)
    }))
    await Promise.all(batch.map((c) => c.disconnect()))
  }
  const t1 = performance.now()
  // one publisher, QoS 1, window of 100, round-robin over the sessions' topics
  const pub = new Client()
  let outstanding = 0, sent = 0, acked = 0, nextId = 1
  const total = sessions * perSession
  const templates = Array.from({ length: sessions }, (_, i) => publishTemplate(`restart/${i}`, PAYLOAD, 1, VERSION))
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
  pub.state.afterData = () => { if (acked === total) done(); else if (pub.ready) pump() }
  await pub.connect(b.port, { clientId: 'restart-publisher', version: VERSION })
  pump()
  await finished
  await pub.disconnect()
  return { fillSecs: (t1 - t0) / 1000, publishSecs: (performance.now() - t1) / 1000 }
}

async function measureRestart(dir: string, run: number, clientIndex: number, perSession: number): Promise<RestartResult> {
  const b = await startVmqtt('restart', false, { durable: true, dir })
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
      const e = await startVmqtt('empty', false, { durable: true })
      empty.push(e.listeningAt - e.spawnedAt)
      await e.stop()
    }
    console.log(JSON.stringify({ bench: 'start-empty', listenMs: empty.map(Math.round) }))
    const dir = tempDir('vmqtt-restart-')
    const b = await startVmqtt('restart-fill', false, { durable: true, dir })
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

process.on('SIGINT', () => { cleanup(); process.exit(130) })
try {
  await main()
} finally {
  cleanup()
}
process.exit(0)

/**
 * Kill -9 torture harness (issue 3), shared by test/integration/17-torture.test.ts and
 * scripts/torture.ts.
 *
 * The broker runs as a child process (`bun src/main.ts`) on a persistent SQLite data dir. Raw
 * MQTT clients (bytes from the independent packet-builder, decoding by mqtt-packet: nothing from
 * src/) publish at QoS 1 and 2 and subscribe with persistent sessions, in MQTT 3.1.1 and 5. In a
 * loop the broker is killed with SIGKILL at a random moment (seeded PRNG), restarted on the same
 * dir, and every client reconnects, resuming its session. Publishers record exactly which
 * messages the broker acknowledged (PUBACK for QoS 1, PUBREC for QoS 2, per packet id) and resend
 * what was not, as MQTT requires: PUBLISH with DUP=1, or PUBREL when PUBREC had arrived. After a
 * final drain, analyse() checks delivery, order and retained state. The seed makes the choices
 * (kill moments, late subscribers) reproducible; thread timing is not.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { analyse } from './torture-analysis.ts'

import { BrokerProcess, Publisher, Signal, Subscriber, prng, readRetained, readSysDrops } from './torture-clients.ts'
export { analyse, type Analysis, type AnalysisInput } from './torture-analysis.ts'

const ROOT = resolve(import.meta.dir, '../..')

export interface TortureOptions {
  cycles: number
  seed: number
  durability?: 'fsync' | 'process'
  /** 'memory' only to prove that the checks fail when nothing is durable. */
  store?: 'sqlite' | 'memory'
  /** The broker lives a uniformly random time in [minUpMs, maxUpMs] before each SIGKILL. */
  minUpMs?: number
  maxUpMs?: number
  /** Unacknowledged messages each publisher keeps in flight. */
  window?: number
  /** Chance per cycle that a subscriber reconnects late (exercises offline queues). */
  lateChance?: number
  /** The final drain fails after this long without progress (default 10 s). */
  drainTimeoutMs?: number
  /**
   * Queue overflow: a small limits.maxQueuedMessages and the session.queueOverflow policy.
   * refuse must lose nothing; drop-oldest / drop-new must lose exactly what the broker counted
   * ($SYS/broker/messages/dropped/queue-*), which needs kill: false (counters live in the process).
   */
  overflow?: { policy: 'refuse' | 'drop-oldest' | 'drop-new'; maxQueued: number }
  /** false: no SIGKILL; each cycle subscribers go away (DISCONNECT) by chance instead. Default true. */
  kill?: boolean
  /** Longest time a subscriber stays away in a cycle (default maxUpMs). */
  offlineMs?: number
  /** Extra VMQTT_* variables for the broker (e.g. VMQTT_DATA_COMMIT_INTERVAL). */
  env?: Record<string, string>
  /** Data directory to use and keep (default: a temporary one, removed at the end). */
  dataDir?: string
  /** Checkout whose src/main.ts runs as the broker (default: this one). */
  root?: string
  log?: (line: string) => void
}

export interface TortureReport {
  seed: number
  cycles: number
  durability: string
  elapsedMs: number
  published: number
  acknowledged: { qos1: number; qos2: number; retained: number }
  resent: { publish: number; pubrel: number }
  /** Publications refused with 0x97 (queue full, refuse) and published again; v3 publishers are disconnected instead. */
  refused: number
  /** Queue drops the broker counted ($SYS, overflow runs without kills), else null. */
  dropsCounted: number | null
  /** The broker's "queue limit" warn lines (expected in overflow runs, not complaints). */
  queueLimitLines: number
  /** Acknowledged data messages times subscribers: what must arrive. */
  expectedDeliveries: number
  /** Of those, how many arrived (at least once). */
  delivered: number
  duplicates: { qos1: number; qos2: number }
  losses: number
  orderViolations: number
  retainedMismatches: number
  sessionsLost: number
  /** Protocol problems seen by the clients (id reuse, QoS mismatch, unknown payloads, ack order). */
  protocolErrors: number
  /** warn/error lines the broker logged. */
  brokerComplaints: string[]
  brokerExitCode: number | null
  /** Milliseconds from spawn to listening, after each kill: mean and max. */
  restartMs: { mean: number; max: number }
  problems: string[]
  ok: boolean
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Runs the whole torture: cycles of traffic and SIGKILL, a final drain, the checks. */
export async function runTorture(o: TortureOptions): Promise<TortureReport> {
  const started = Date.now()
  const rnd = prng(o.seed)
  const log = o.log ?? (() => {})
  const minUp = o.minUpMs ?? 50
  const maxUp = o.maxUpMs ?? 600
  const lateChance = o.lateChance ?? 0.25
  const kill = o.kill ?? true
  const offlineMs = o.offlineMs ?? maxUp
  const policy = o.overflow?.policy
  if (policy !== undefined && policy !== 'refuse' && kill) throw new Error('torture: a drop-* overflow run needs kill: false (the drop counters live in the broker process)')
  const durability = o.durability ?? 'fsync'
  const problems: string[] = []
  const problem = (s: string) => { if (problems.length < 200) problems.push(s) }
  const complaints: string[] = []
  const signal = new Signal()
  const dir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'vmqtt-torture-'))
  const env = {
    VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off', VMQTT_SYS_INTERVAL: '0',
    VMQTT_DATA_DIR: dir, VMQTT_DATA_STORE: o.store ?? 'sqlite', VMQTT_DATA_DURABILITY: durability,
    VMQTT_LOG_LEVEL: 'info', VMQTT_LIMITS_MAX_INFLIGHT: '100', VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '10000000',
    ...(o.overflow !== undefined ? {
      VMQTT_LIMITS_MAX_QUEUED_MESSAGES: String(o.overflow.maxQueued), VMQTT_SESSION_QUEUE_OVERFLOW: o.overflow.policy, VMQTT_SYS_INTERVAL: kill ? '0' : '1',
    } : {}),
    ...o.env,
  }
  const root = o.root ?? ROOT
  const window = o.window ?? 10
  const pubs = [
    new Publisher('p4q1', 4, 1, window, problem, signal), new Publisher('p4q2', 4, 2, window, problem, signal),
    new Publisher('p5q1', 5, 1, window, problem, signal), new Publisher('p5q2', 5, 2, window, problem, signal),
  ]
  for (const p of pubs) p.retryRefused = policy === 'refuse'
  const qosOf = new Map(pubs.map((p) => [p.id, p.qos]))
  const subs = [
    // the broker's inflight window (100) applies to v4; s5b's Receive Maximum of 10 keeps it behind (a standing queue)
    new Subscriber('s4a', 4, 0, qosOf, problem, signal), new Subscriber('s4b', 4, 0, qosOf, problem, signal),
    new Subscriber('s5a', 5, 100, qosOf, problem, signal), new Subscriber('s5b', 5, 10, qosOf, problem, signal),
  ]
  let broker: BrokerProcess | null = null
  let exitCode: number | null = null
  const lateTimers: ReturnType<typeof setTimeout>[] = []
  const pending: Promise<boolean>[] = []
  /** Publishers reconnect at once; each subscriber at once or, by chance, a random time later. */
  const connectAll = (port: number) => {
    for (const p of pubs) pending.push(p.connect(port))
    for (const s of subs) {
      const ms = rnd() < lateChance ? Math.round(rnd() * offlineMs) : 0
      if (ms <= 0) pending.push(s.connect(port))
      else lateTimers.push(setTimeout(() => pending.push(s.connect(port)), ms))
    }
  }
  const settle = async () => {
    for (const t of lateTimers.splice(0)) clearTimeout(t)
    await Promise.all(pending.splice(0))
  }
  const starts: number[] = []
  const acked = () => pubs.reduce((n, p) => n + p.ackedData.length + p.ackedRetained, 0)
  try {
    broker = await BrokerProcess.start(root, env, complaints)
    // first connection: subscriptions exist before any message is published
    for (const s of subs) if (!(await s.connect(broker.port))) throw new Error(`subscriber ${s.id} could not subscribe`)
    for (const p of pubs) pending.push(p.connect(broker.port))
    for (let cycle = 1; cycle <= o.cycles; cycle++) {
      const up = Math.round(minUp + rnd() * (maxUp - minUp))
      const before = acked()
      await delay(up) // the random moment of the kill: the point of the test, not a synchronisation
      if (!kill) {
        // no kill: subscribers go away for a while (their return timers keep running across
        // cycles), publishers keep publishing (and come back when refused)
        await Promise.all(pending.splice(0))
        const port = broker.port
        let away = 0
        for (const s of subs) {
          if (!s.connected || rnd() >= lateChance) continue
          away++
          s.close()
          lateTimers.push(setTimeout(() => pending.push(s.connect(port)), Math.round(rnd() * offlineMs)))
        }
        for (const p of pubs) if (!p.connected) pending.push(p.connect(port))
        log(`cycle ${cycle}/${o.cycles}: ${away} subscribers away, acknowledged +${acked() - before} (total ${acked()})`)
        continue
      }
      await broker.kill()
      await settle()
      log(`cycle ${cycle}/${o.cycles}: killed after ${up} ms, acknowledged +${acked() - before} (total ${acked()})`)
      const t0 = Date.now()
      broker = await BrokerProcess.start(root, env, complaints)
      starts.push(Date.now() - t0)
      log(`  restarted in ${starts.at(-1)} ms`)
      connectAll(broker.port)
    }
    // final drain: everyone online, no new messages, every flow completes
    await settle()
    for (const c of [...pubs, ...subs]) if (!c.connected) await c.connect(broker.port)
    for (const p of pubs) p.producing = false
    const drainMs = o.drainTimeoutMs ?? 10_000
    const drainMax = drainMs * 30
    const settled = () => pubs.every((p) => p.inflight.size === 0 && p.retrying === 0)
    const drainEnd = Date.now() + drainMax
    for (;;) {
      // a v3 publisher refused (queue full) is disconnected: it comes back and resends
      const progress = await signal.untilStalled(() => settled() || pubs.some((p) => !p.connected), drainMs, Math.max(1, drainEnd - Date.now()))
      if (settled() || !progress || Date.now() >= drainEnd) break
      for (const p of pubs) if (!p.connected && !(await p.connect(broker.port))) await delay(50)
    }
    if (!settled()) {
      problem(`drain: publishers still have ${pubs.map((p) => `${p.id}=${p.inflight.size}`).join(' ')} in flight (connected: ${pubs.map((p) => p.connected).join(',')})`)
    }
    log(`drain: publishers settled after ${Date.now() - started} ms`)
    for (const s of subs) {
      s.missing = new Set()
      for (const p of pubs) for (const seq of p.ackedData) if (!s.seen.get(p.id)?.has(seq)) s.missing.add(`${p.id}:${seq}`)
    }
    // with drop-* some never come: give up sooner once nothing arrives any more
    const dropping = policy === 'drop-oldest' || policy === 'drop-new'
    await signal.untilStalled(() => subs.every((s) => s.missing!.size === 0), dropping ? 1000 : drainMs, drainMax)
    log(`drain: subscribers done after ${Date.now() - started} ms`)
    const retained = await readRetained(broker.port, pubs.filter((p) => p.lastAckedRetained > 0).length, signal, Math.min(drainMs, 5000))
    const sysDrops = policy !== undefined && !kill ? await readSysDrops(broker.port, signal, 5000) : null
    const dropsCounted = sysDrops === null ? null : [...sysDrops].filter(([r]) => r.startsWith('queue-')).reduce((n, [, v]) => n + v, 0)
    for (const c of [...pubs, ...subs]) c.close()
    exitCode = await broker.stop()
    broker = null
    const a = analyse({ publishers: pubs, subscribers: subs, retained })
    const queueLimitLines = complaints.filter((c) => c.includes('"msg":"queue limit: ')).length
    const otherComplaints = complaints.filter((c) => !c.includes('"msg":"queue limit: '))
    const protocolErrors = problems.filter((p) => !p.startsWith('session lost') && !p.startsWith('drain')).length
    const report: TortureReport = {
      seed: o.seed, cycles: o.cycles, durability: `${o.store ?? 'sqlite'}/${durability}`, elapsedMs: Date.now() - started,
      published: pubs.reduce((n, p) => n + p.nextSeq - 1, 0),
      acknowledged: {
        qos1: pubs.filter((p) => p.qos === 1).reduce((n, p) => n + p.ackedData.length + p.ackedRetained, 0),
        qos2: pubs.filter((p) => p.qos === 2).reduce((n, p) => n + p.ackedData.length + p.ackedRetained, 0),
        retained: pubs.reduce((n, p) => n + p.ackedRetained, 0),
      },
      resent: { publish: pubs.reduce((n, p) => n + p.resentPublish, 0), pubrel: pubs.reduce((n, p) => n + p.resentPubrel, 0) },
      refused: pubs.reduce((n, p) => n + p.refused, 0), dropsCounted, queueLimitLines,
      expectedDeliveries: a.expectedDeliveries, delivered: a.delivered, duplicates: a.duplicates, losses: a.losses,
      orderViolations: a.orderViolations, retainedMismatches: a.retainedMismatches,
      sessionsLost: problems.filter((p) => p.startsWith('session lost')).length,
      protocolErrors: protocolErrors + a.unknown,
      brokerComplaints: otherComplaints.slice(0, 20), brokerExitCode: exitCode,
      restartMs: { mean: Math.round(starts.reduce((a, b) => a + b, 0) / Math.max(starts.length, 1)), max: Math.max(0, ...starts) },
      problems: [...problems.slice(0, 20), ...a.problems], ok: false,
    }
    // drop-*: exactly the counted drops are lost; otherwise nothing
    const allowedLosses = policy === 'drop-oldest' || policy === 'drop-new' ? dropsCounted : 0
    report.ok = report.losses === allowedLosses && report.duplicates.qos2 === 0 && report.orderViolations === 0 &&
      report.retainedMismatches === 0 && report.sessionsLost === 0 && report.protocolErrors === 0 &&
      problems.length === 0 && exitCode === 0 && otherComplaints.length === 0
    return report
  } finally {
    for (const t of lateTimers) clearTimeout(t)
    for (const c of [...pubs, ...subs]) c.wire?.destroy()
    if (broker !== null) await broker.kill()
    if (o.dataDir === undefined) rmSync(dir, { recursive: true, force: true })
  }
}

/** One-paragraph summary of a report. */
export function summary(r: TortureReport): string {
  return [
    `torture ${r.ok ? 'PASSED' : 'FAILED'}: seed ${r.seed}, ${r.cycles} cycles, ${r.durability}, ${(r.elapsedMs / 1000).toFixed(1)} s`,
    `published ${r.published}; acknowledged QoS 1 ${r.acknowledged.qos1}, QoS 2 ${r.acknowledged.qos2} (retained ${r.acknowledged.retained}); resent ${r.resent.publish} PUBLISH (DUP) + ${r.resent.pubrel} PUBREL`,
    `deliveries expected ${r.expectedDeliveries}, delivered ${r.delivered}; duplicates QoS 1 ${r.duplicates.qos1}, QoS 2 ${r.duplicates.qos2}; losses ${r.losses}; order violations ${r.orderViolations}`,
    `retained mismatches ${r.retainedMismatches}; sessions lost ${r.sessionsLost}; protocol errors ${r.protocolErrors}; broker warn/error lines ${r.brokerComplaints.length}; graceful exit code ${r.brokerExitCode}`,
    `queue limits: refused ${r.refused} (published again), drops counted by the broker ${r.dropsCounted ?? 'n/a'}, "queue limit" warn lines ${r.queueLimitLines}`,
    `restart after SIGKILL (spawn to listening): mean ${r.restartMs.mean} ms, max ${r.restartMs.max} ms`,
    ...r.problems.map((p) => `  - ${p}`),
    ...r.brokerComplaints.slice(0, 5).map((c) => `  broker: ${c}`),
  ].join('\n')
}

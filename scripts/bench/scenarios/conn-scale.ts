/**
 * Connection scale: N idle connections (default 19,000), each with one QoS 0 subscription of its
 * own, opened by several client processes (conn-worker.ts, at most ~5,000 connections each:
 * the per-process file limit is 20,000) from many 127.0.0.x source addresses. Measured: the
 * connect rate (CONNECT -> CONNACK -> SUBSCRIBE -> SUBACK completed per second, 100 at a time
 * in total) and the broker's RSS per connection: VmRSS after everything is connected and has
 * settled for 2 s, minus VmRSS before the first connection, divided by N. Before that, a
 * warm-up (see warmUp) of the same duration as the other scenarios' warm-up.
 */
import { join } from 'node:path'
import { track } from '../proc.ts'
import { procCpuSeconds, procRssBytes } from '../stats.ts'
import type { Metrics, RunContext, Scenario } from './types.ts'

const CONCURRENCY = 100
const SETTLE_MS = 2000
const ADDRESSES_PER_PROC = 2
let addressCursor = 0

interface Done { connected: number; failed: number; ms: number; error: string }

/** Splits a child's stdout into JSON objects, handing each to `on`. */
async function readJson(stream: ReadableStream<Uint8Array>, on: (o: Record<string, unknown>) => void): Promise<void> {
  const dec = new TextDecoder()
  let text = ''
  for await (const chunk of stream) {
    text += dec.decode(chunk, { stream: true })
    let nl: number
    while ((nl = text.indexOf('\n')) >= 0) {
      const line = text.slice(0, nl)
      text = text.slice(nl + 1)
      try { on(JSON.parse(line) as Record<string, unknown>) } catch { /* not ours */ }
    }
  }
}

/** Source addresses for the next run, rotated so the ports a run leaves in TIME_WAIT are not reused soon. */
function nextAddresses(count: number): string[] {
  const out: string[] = []
  for (let i = 0; i < count; i++) { out.push(`127.0.0.${2 + (addressCursor % 250)}`); addressCursor++ }
  return out
}

interface Worker { child: Bun.Subprocess<'pipe', 'pipe', 'inherit'>; ready: Promise<void>; done: Promise<Done> }

/** Starts one conn-worker process per spec; each prints ready, then done after "go". */
function spawnWorkers(ctx: RunContext, specs: object[]): Worker[] {
  return specs.map((spec) => {
    const child = track(Bun.spawn([process.execPath, join(import.meta.dir, '..', 'conn-worker.ts'), JSON.stringify({ port: ctx.broker.port, version: ctx.version, ...spec })], { stdin: 'pipe', stdout: 'pipe', stderr: 'inherit' }))
    let ready!: () => void
    let done!: (d: Done) => void
    const w = { child, ready: new Promise<void>((r) => { ready = r }), done: new Promise<Done>((r) => { done = r }) }
    void readJson(child.stdout, (o) => { if (o.ready) ready(); if (o.done) done(o as unknown as Done) })
    void child.exited.then(() => done({ connected: 0, failed: (spec as { count: number }).count, ms: 0, error: `worker exited ${child.exitCode}` }))
    return w
  })
}

async function go(workers: Worker[]): Promise<Done[]> {
  await Promise.all(workers.map((w) => w.ready))
  for (const w of workers) { w.child.stdin.write('go\n'); w.child.stdin.flush() }
  return Promise.all(workers.map((w) => w.done))
}

async function stop(workers: Worker[]): Promise<void> {
  for (const w of workers) { try { w.child.kill('SIGKILL') } catch { /* gone */ } }
  await Promise.all(workers.map((w) => w.child.exited))
}

/**
 * The warm-up: for warmupMs, the same connect + subscribe sequence, each connection closed after
 * its SUBACK (as the other scenarios warm up with their own load). One-time costs (the JIT
 * compiling the connect path, first-use allocations) then fall before the measurement instead
 * of being spread over its connections.
 */
async function warmUp(ctx: RunContext, procs: number): Promise<number> {
  if (ctx.warmupMs <= 0) return 0
  const workers = spawnWorkers(ctx, Array.from({ length: procs }, (_, w) => ({
    count: CONCURRENCY, addresses: nextAddresses(ADDRESSES_PER_PROC), prefix: `${ctx.tag}-warm${w}`, concurrency: Math.ceil(CONCURRENCY / procs), warmupMs: ctx.warmupMs,
  })))
  try {
    const results = await go(workers)
    return results.reduce((a, r) => a + r.connected, 0)
  } finally {
    await stop(workers)
    await Bun.sleep(SETTLE_MS)
  }
}

export async function runConnScale(ctx: RunContext): Promise<Metrics> {
  const n = ctx.connections
  const procs = Math.max(1, ctx.connProcs || Math.ceil(n / 5000))
  const per = Math.ceil(n / procs)
  const warmupConnections = await warmUp(ctx, procs)
  const workers = spawnWorkers(ctx, Array.from({ length: procs }, (_, w) => ({
    count: Math.min(per, n - w * per), addresses: nextAddresses(ADDRESSES_PER_PROC), prefix: `${ctx.tag}-w${w}`, concurrency: Math.ceil(CONCURRENCY / procs),
  })))
  try {
    await Promise.all(workers.map((w) => w.ready))
    await Bun.sleep(500)
    const rss0 = procRssBytes(ctx.broker.pid)
    const cpu = () => [procCpuSeconds(ctx.broker.pid), workers.reduce((a, w) => a + procCpuSeconds(w.child.pid), 0)] as const
    const [b0, g0] = cpu()
    const t0 = performance.now()
    const results = await go(workers)
    const secs = (performance.now() - t0) / 1000
    const [b1, g1] = cpu()
    await Bun.sleep(SETTLE_MS)
    const rss1 = procRssBytes(ctx.broker.pid)
    const connected = results.reduce((a, r) => a + r.connected, 0)
    const failed = results.reduce((a, r) => a + r.failed, 0)
    const error = results.find((r) => r.error)?.error
    if (error) console.error(`conn-scale ${ctx.broker.name}: ${failed} failed, first error: ${error}`)
    return {
      connected, failed, connectPerSec: connected / secs,
      rssPerConnBytes: connected > 0 ? (rss1 - rss0) / connected : NaN,
      rssBeforeMiB: rss0 / 1048576, rssAfterMiB: rss1 / 1048576, procs, warmupConnections,
      brokerCpuPct: Math.round(((b1 - b0) / secs) * 100), genCpuPct: Math.round(((g1 - g0) / secs) * 100),
    }
  } finally {
    await stop(workers)
  }
}

export const connScale: Scenario = {
  name: 'conn-scale',
  title: 'Connection scale: N idle connections, one subscription each (connect rate, broker RSS per connection)',
  metrics: [
    { key: 'connectPerSec', label: 'connects/s', unit: 'conn/s', better: 'higher' },
    { key: 'rssPerConnBytes', label: 'RSS B/conn', unit: 'B', better: 'lower' },
    { key: 'connected', label: 'connected', unit: '', better: 'higher' },
  ],
  run: runConnScale,
}

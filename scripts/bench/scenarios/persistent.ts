/**
 * Persistent QoS 1 (also run by scripts/bench-persistence.ts): P publisher/subscriber pairs;
 * publisher i (clean session) publishes QoS 1 to bench/<tag>/<i>; subscriber i is persistent
 * (clean session 0 / v5 session expiry 3600), subscribed with QoS 1, PUBACKs every message.
 * Each publisher keeps up to `window` PUBLISH unacknowledged (so group commit can batch) and
 * runs at most `lead` messages ahead of its subscriber (so no queue overflows and drops).
 * Counted: deliveries per second, PUBACKs per second, the longest time no subscriber got
 * anything, and after a drain, messages acknowledged to a publisher but never delivered.
 * Brokers run with their durable store (vmqtt SQLite fsync, Mosquitto persistence true).
 */
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { connectAll } from '../client.ts'
import { payloadOf, subscriber, WindowedPublisher } from '../generator.ts'
import { Histogram } from '../stats.ts'
import { measureWindow, MSGS, P99, type RunContext, type Scenario } from './types.ts'

export interface PersistentOptions { pairs: number; window: number; lead: number; payload: number }
export const PERSISTENT_DEFAULTS: PersistentOptions = { pairs: 10, window: 100, lead: 500, payload: 64 }

export interface PersistentResult {
  msgsPerSec: number; pubacksPerSec: number; p50Ms: number; p99Ms: number; brokerCpuPct: number; genCpuPct: number
  perSecond: number[]; maxStallMs: number; sent: number; acked: number; received: number; missing: number; extra: number; dbBytes: number
}

export const SESSION_EXPIRY = 3600

export async function runPersistent(ctx: RunContext, o: PersistentOptions = PERSISTENT_DEFAULTS): Promise<PersistentResult> {
  const { broker, version, tag } = ctx
  const hist = new Histogram()
  const payload = payloadOf(o.payload)
  // the longest time no subscriber received anything while measuring (a stall of the broker)
  let measuring = false, lastDelivery = 0, maxStall = 0
  const pairs = await connectAll(o.pairs, async (i) => {
    const counter = { received: 0 }
    const topic = `bench/${tag}/${i}`
    const pub = new WindowedPublisher(topic, payload, 1, version, o.window, o.lead, counter)
    const sub = subscriber(version, counter, hist, () => {
      if (measuring) {
        const now = performance.now()
        if (now - lastDelivery > maxStall) maxStall = now - lastDelivery
        lastDelivery = now
      }
      pub.refill()
    })
    await sub.connect(broker.port, { clientId: `${tag}-s${i}`, version, clean: false, sessionExpiry: SESSION_EXPIRY })
    await sub.subscribe(topic, 1)
    await pub.client.connect(broker.port, { clientId: `${tag}-p${i}`, version })
    pub.connected()
    return { pub, sub }
  }, 10)
  const received = () => pairs.reduce((a, p) => a + p.pub.counter.received, 0)
  const acked = () => pairs.reduce((a, p) => a + p.pub.acked, 0)
  for (const p of pairs) p.pub.refill()
  // per-second deliveries, to show stalls (checkpoints, garbage collection of rows)
  const perSecond: number[] = []
  let a0 = 0, t0 = 0, last = 0
  const sampler = setInterval(() => {
    if (!measuring) return
    const r = received()
    perSecond.push(r - last)
    last = r
  }, 1000)
  const warm = Bun.sleep(ctx.warmupMs).then(() => {
    a0 = acked(); t0 = performance.now(); last = received()
    measuring = true
    lastDelivery = t0
  })
  const m = await measureWindow(ctx, received, hist)
  await warm
  const a1 = acked(), secs = (performance.now() - t0) / 1000
  measuring = false
  clearInterval(sampler)
  for (const p of pairs) p.pub.running = false
  // drain: every acknowledged message must reach its subscriber
  const deadline = performance.now() + 15_000
  while (performance.now() < deadline && pairs.some((p) => p.pub.outstanding > 0 || p.pub.counter.received < p.pub.acked)) await Bun.sleep(20)
  const missing = pairs.reduce((a, p) => a + Math.max(0, p.pub.acked - p.pub.counter.received), 0)
  const extra = pairs.reduce((a, p) => a + Math.max(0, p.pub.counter.received - p.pub.sent), 0)
  const dbBytes = dirBytes(broker.dir)
  await Promise.all(pairs.flatMap((p) => [p.pub.client.disconnect(), p.sub.disconnect()]))
  return {
    msgsPerSec: m.msgsPerSec!, pubacksPerSec: (a1 - a0) / secs, p50Ms: m.p50Ms!, p99Ms: m.p99Ms!, brokerCpuPct: m.brokerCpuPct!, genCpuPct: m.genCpuPct!,
    perSecond, maxStallMs: Math.round(maxStall), sent: pairs.reduce((a, p) => a + p.pub.sent, 0), acked: acked(), received: received(), missing, extra, dbBytes,
  }
}

export function dirBytes(dir: string): number {
  let n = 0
  try {
    for (const f of readdirSync(dir)) { try { n += statSync(join(dir, f)).size } catch { /* gone */ } }
  } catch { /* no dir */ }
  return n
}

export const persistent: Scenario = {
  name: 'persistent',
  title: `Persistent QoS 1, durable store: ${PERSISTENT_DEFAULTS.pairs} pairs, persistent subscribers, window ${PERSISTENT_DEFAULTS.window}, ${PERSISTENT_DEFAULTS.payload} B`,
  durable: true,
  metrics: [MSGS, P99, { key: 'missing', label: 'lost', unit: '', better: 'lower' }, { key: 'maxStallMs', label: 'longest stall', unit: 'ms', better: 'lower' }],
  run: async (ctx) => {
    const r = await runPersistent(ctx)
    const { perSecond: _ps, ...flat } = r
    return flat
  },
}

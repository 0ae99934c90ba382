/** What every scenario gets and returns, and the shared measurement window. */
import type { BrokerProc } from '../brokers.ts'
import type { Version } from '../packets.ts'
import { CpuMeter, Histogram } from '../stats.ts'

export interface RunContext {
  broker: BrokerProc
  version: Version
  warmupMs: number
  durationMs: number
  /** Unique per run: used in client ids and topics. */
  tag: string
  /** 1-based run number (connection scale rotates its source addresses with it). */
  run: number
  /** Messages/s for the latency scenario. */
  rate: number
  /** Idle connections for the connection-scale scenario, and how many client processes. */
  connections: number
  connProcs: number
}

export type Metrics = Record<string, number>

export interface MetricDef {
  key: string
  label: string
  unit: string
  better: 'higher' | 'lower'
  /** Which chart panel shows it. */
  chart?: 'throughput' | 'latency'
}

export interface Scenario {
  name: string
  /** One line for the table and the README. */
  title: string
  durable?: boolean
  metrics: MetricDef[]
  run(ctx: RunContext): Promise<Metrics>
}

export const MSGS: MetricDef = { key: 'msgsPerSec', label: 'msgs/s', unit: 'msgs/s', better: 'higher', chart: 'throughput' }
export const P50: MetricDef = { key: 'p50Ms', label: 'p50', unit: 'ms', better: 'lower' }
export const P99: MetricDef = { key: 'p99Ms', label: 'p99', unit: 'ms', better: 'lower', chart: 'latency' }
export const P999: MetricDef = { key: 'p999Ms', label: 'p99.9', unit: 'ms', better: 'lower' }

/**
 * Warm-up, then the fixed measurement window: deliveries per second counted at the
 * subscribers, latency percentiles of the messages received in the window, and the CPU the
 * broker and this process (the generator) used in it.
 */
export async function measureWindow(ctx: RunContext, delivered: () => number, hist: Histogram): Promise<Metrics> {
  await Bun.sleep(ctx.warmupMs)
  const meter = new CpuMeter(ctx.broker.pid)
  const r0 = delivered()
  hist.reset()
  meter.start()
  const t0 = performance.now()
  await Bun.sleep(ctx.durationMs)
  const r1 = delivered()
  const secs = (performance.now() - t0) / 1000
  const cpu = meter.stop()
  return {
    msgsPerSec: (r1 - r0) / secs,
    p50Ms: hist.percentile(50), p99Ms: hist.percentile(99), p999Ms: hist.percentile(99.9),
    ...cpu,
  }
}

/** Reads the send time (performance.now(), float64 LE) written at the payload's start. */
export const STAMP_BYTES = 8

/**
 * The suite's loop: per MQTT version and scenario, `runs` rounds, each round every broker in
 * turn (so brokers compared in a scenario are measured close together in time), each broker
 * started fresh for the run and stopped after it. One JSON line per broker, scenario and run.
 */
import { appendFileSync } from 'node:fs'
import type { BrokerDef } from './brokers.ts'
import type { Version } from './packets.ts'
import { fmt, type ResultLine } from './report.ts'
import { qos0Pairs, type Scenario } from './scenarios/index.ts'
import type { Metrics, RunContext } from './scenarios/types.ts'
import { spread } from './stats.ts'

export interface SuiteOptions {
  scenarios: Scenario[]
  brokers: BrokerDef[]
  versions: Version[]
  runs: number
  warmupMs: number
  durationMs: number
  /** Fixed rate of the latency scenario, or null: half of Mosquitto's qos0-pairs maximum. */
  rate: number | null
  connections: number
  connProcs: number
  brokerCore: number | null
  /** Mosquitto, for the latency calibration even when it is not among the brokers. */
  mosquitto: BrokerDef | null
  jsonl: string
  notes: string[]
}

/** Used when there is no Mosquitto to calibrate against: the issue's reference load. */
const FALLBACK_RATE = 5000

let tagSeq = 0
const tag = (run: number) => `${run}${(Date.now() % 1e8).toString(36)}${(tagSeq++).toString(36)}`

function write(o: SuiteOptions, line: object): void {
  appendFileSync(o.jsonl, `${JSON.stringify(line, (_, v: unknown) => typeof v === 'number' && !Number.isInteger(v) ? +v.toPrecision(6) : v)}\n`)
}

function brief(sc: Scenario, m: Metrics): string {
  const parts = sc.metrics.filter((d) => typeof m[d.key] === 'number').map((d) => `${d.label} ${fmt(m[d.key]!, d.unit)}${d.unit === 'ms' ? ' ms' : ''}`)
  if (m.brokerCpuPct !== undefined) parts.push(`cpu broker ${m.brokerCpuPct}% gen ${m.genCpuPct}%`)
  if (m.brokerFaultsPerSec !== undefined) parts.push(`faults ${m.brokerFaultsPerSec}/s`)
  if (m.dropped) parts.push(`dropped ${m.dropped}`)
  return parts.join(', ')
}

async function runOne(o: SuiteOptions, sc: Scenario, b: BrokerDef, version: Version, run: number, rate: number): Promise<ResultLine | null> {
  const base = { broker: b.id, label: b.label, scenario: sc.name, version, run }
  let broker
  try {
    broker = await b.start({ durable: sc.durable ?? false, core: o.brokerCore })
  } catch (e) {
    write(o, { type: 'error', ...base, error: `start: ${(e as Error).message}` })
    console.log(`  ${b.id}: could not start: ${(e as Error).message.split('\n')[0]}`)
    return null
  }
  try {
    const ctx: RunContext = { broker, version, warmupMs: o.warmupMs, durationMs: o.durationMs, tag: tag(run), run, rate, connections: o.connections, connProcs: o.connProcs }
    const m = await sc.run(ctx)
    const line: ResultLine = { type: 'result', ...base, time: new Date().toISOString(), ...m }
    write(o, line)
    console.log(`  ${b.id.padEnd(10)} ${brief(sc, m)}`)
    return line
  } catch (e) {
    write(o, { type: 'error', ...base, error: (e as Error).message })
    console.log(`  ${b.id}: failed: ${(e as Error).message.split('\n')[0]}`)
    return null
  } finally {
    await broker.stop()
  }
}

/** Half of Mosquitto's 100-pair QoS 0 maximum (median of the runs) for this version. */
async function calibrate(o: SuiteOptions, version: Version): Promise<number> {
  if (o.mosquitto === null) {
    o.notes.push(`latency: no Mosquitto to calibrate against, fixed rate ${FALLBACK_RATE} msgs/s (use --rate).`)
    return FALLBACK_RATE
  }
  console.log(`qos0-pairs (latency calibration) v${version}`)
  const rates: number[] = []
  for (let run = 1; run <= o.runs; run++) {
    const line = await runOne(o, qos0Pairs, o.mosquitto, version, run, 0)
    if (line && typeof line.msgsPerSec === 'number') rates.push(line.msgsPerSec)
  }
  const max = spread(rates).median
  const rate = Number.isFinite(max) ? Math.round(max / 2) : FALLBACK_RATE
  o.notes.push(`latency v${version === 5 ? '5' : '3.1.1'}: fixed rate ${rate.toLocaleString('en-US')} msgs/s = half of Mosquitto's 100-pair QoS 0 maximum (${Math.round(max).toLocaleString('en-US')} msgs/s, median of ${rates.length}).`)
  return rate
}

export async function runSuite(o: SuiteOptions): Promise<ResultLine[]> {
  const results: ResultLine[] = []
  for (const version of o.versions) {
    for (const sc of o.scenarios) {
      const rate = sc.name === 'latency' ? (o.rate ?? await calibrate(o, version)) : 0
      for (let run = 1; run <= o.runs; run++) {
        console.log(`${sc.name} v${version === 5 ? '5' : '3.1.1'} run ${run}/${o.runs}${sc.name === 'latency' ? ` at ${rate} msgs/s` : ''}`)
        for (const b of o.brokers) {
          if (!b.versions.includes(version)) continue
          const line = await runOne(o, sc, b, version, run, rate)
          if (line) results.push(line)
        }
      }
    }
  }
  return results
}

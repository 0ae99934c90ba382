/**
 * The markdown report: per MQTT version, scenario and metric the median of the runs with the
 * spread (min-max) per broker, the ratios vmqtt/Mosquitto and vmqtt/Aedes, and issue 4's
 * targets with whether they are met.
 */
import { scenarioByName } from './scenarios/index.ts'
import type { MetricDef } from './scenarios/types.ts'
import { spread, type Spread } from './stats.ts'

export interface ResultLine {
  type: 'result'
  broker: string
  label: string
  scenario: string
  version: 4 | 5
  run: number
  [metric: string]: unknown
}

export interface Target { vsMosquitto?: number; vsAedes?: number; max?: number }

/** Issue 4's targets: vmqtt against the others in the same run (ratios of medians). */
export const TARGETS: Record<string, Record<string, Target>> = {
  'fan-in': { msgsPerSec: { vsMosquitto: 1.5, vsAedes: 10 } },
  'fan-out': { msgsPerSec: { vsMosquitto: 1.5, vsAedes: 10 } },
  'qos1-w64': { msgsPerSec: { vsMosquitto: 1.2, vsAedes: 10 } },
  'qos2-w64': { msgsPerSec: { vsMosquitto: 1.2, vsAedes: 10 } },
  'qos1-w1': { msgsPerSec: { vsMosquitto: 1, vsAedes: 10 } },
  'qos2-w1': { msgsPerSec: { vsMosquitto: 1, vsAedes: 10 } },
  latency: { p99Ms: { vsMosquitto: 1, max: 10 } },
  'conn-scale': { rssPerConnBytes: { max: 2048 } },
  persistent: { msgsPerSec: { vsAedes: 10 } },
  large: { msgsPerSec: { vsAedes: 10 } },
}

export function fmt(v: number, unit: string): string {
  if (!Number.isFinite(v)) return '-'
  if (unit === 'ms') return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3)
  if (unit === 'MiB/s') return v.toFixed(v >= 100 ? 0 : 1)
  if (unit === 'B' || unit === '') return Math.round(v).toLocaleString('en-US')
  const a = Math.abs(v)
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`
  return v.toFixed(0)
}

export type Summary = Map<string, Spread>
const key = (version: number, scenario: string, broker: string, metric: string) => `${version}|${scenario}|${broker}|${metric}`

export function summarize(lines: ResultLine[]): Summary {
  const groups = new Map<string, number[]>()
  for (const l of lines) {
    for (const [k, v] of Object.entries(l)) {
      if (typeof v !== 'number' || k === 'run' || k === 'version') continue
      const g = key(l.version, l.scenario, l.broker, k)
      groups.set(g, [...(groups.get(g) ?? []), v])
    }
  }
  return new Map([...groups].map(([k, xs]) => [k, spread(xs)]))
}

export function get(s: Summary, version: number, scenario: string, broker: string, metric: string): Spread | undefined {
  return s.get(key(version, scenario, broker, metric))
}

const VM = ['vmqtt', 'vmqtt-bin']

/** Whether the generator rather than the broker was saturated in most runs of this cell. */
export function genBound(lines: ResultLine[], version: number, scenario: string, broker: string): boolean {
  const rs = lines.filter((l) => l.version === version && l.scenario === scenario && l.broker === broker && typeof l.genCpuPct === 'number')
  const bound = rs.filter((l) => (l.genCpuPct as number) >= 90 && (l.brokerCpuPct as number) < 90).length
  return rs.length > 0 && bound * 2 > rs.length
}

function ratioCell(ours: Spread | undefined, theirs: Spread | undefined): number {
  return ours && theirs && theirs.median > 0 ? ours.median / theirs.median : NaN
}

function verdict(m: MetricDef, t: Target | undefined, rm: number, ra: number, ours: Spread | undefined): string {
  if (!t) return ''
  const parts: string[] = []
  const cmp = (r: number, want: number) => !Number.isFinite(r) ? 'n/a' : (m.better === 'higher' ? r >= want : r <= want) ? 'ok' : 'MISS'
  const sign = m.better === 'higher' ? '>=' : '<='
  if (t.vsMosquitto !== undefined) parts.push(`${sign}${t.vsMosquitto}x M ${cmp(rm, t.vsMosquitto)}`)
  if (t.vsAedes !== undefined) parts.push(`>=${t.vsAedes}x A ${cmp(ra, t.vsAedes)}`)
  if (t.max !== undefined) parts.push(`<=${fmt(t.max, m.unit)} ${m.unit} ${ours && Number.isFinite(ours.median) ? (ours.median <= t.max ? 'ok' : 'MISS') : '?'}`)
  return parts.join('; ')
}

export interface Column { id: string; label: string }

/** The markdown tables, one per MQTT version. */
export function markdown(lines: ResultLine[], brokers: Column[], notes: string[], header: string): string {
  const s = summarize(lines)
  const versions = [...new Set(lines.map((l) => l.version))].sort()
  const scenarios = [...new Set(lines.map((l) => l.scenario))]
  const ours = brokers.find((b) => VM.includes(b.id))?.id ?? 'vmqtt'
  const out: string[] = [header, '']
  for (const v of versions) {
    out.push(`### MQTT ${v === 5 ? '5' : '3.1.1'}`, '')
    out.push(`| scenario | metric | ${brokers.map((b) => b.label).join(' | ')} | ${ours}/mosquitto | ${ours}/aedes | target (issue 4) |`)
    out.push(`|---|---|${brokers.map(() => '---:').join('|')}|---:|---:|---|`)
    for (const name of scenarios) {
      const sc = scenarioByName(name)
      if (!sc || !lines.some((l) => l.version === v && l.scenario === name)) continue
      for (const m of sc.metrics) {
        const cells = brokers.map((b) => {
          const x = get(s, v, name, b.id, m.key)
          if (!x || x.n === 0) return '-'
          const star = m.unit.endsWith('/s') && genBound(lines, v, name, b.id) ? '*' : ''
          return (x.n > 1 && x.min !== x.max ? `${fmt(x.median, m.unit)} (${fmt(x.min, m.unit)}-${fmt(x.max, m.unit)})` : fmt(x.median, m.unit)) + star
        })
        const o = get(s, v, name, ours, m.key)
        const rm = ratioCell(o, get(s, v, name, 'mosquitto', m.key))
        const ra = ratioCell(o, get(s, v, name, 'aedes', m.key))
        const unit = m.unit && !m.label.includes(m.unit) ? ` (${m.unit})` : ''
        out.push(`| ${name} | ${m.label}${unit} | ${cells.join(' | ')} | ${Number.isFinite(rm) ? rm.toFixed(2) : '-'} | ${Number.isFinite(ra) ? ra.toFixed(1) : '-'} | ${verdict(m, TARGETS[name]?.[m.key], rm, ra, o)} |`)
      }
    }
    out.push('')
  }
  if (lines.some((l) => genBound(lines, l.version, l.scenario, l.broker))) {
    out.push('`*` the load generator was the busier side in most runs (>= 90 % of its core while the broker used < 90 % of its own): that broker may be faster than shown.', '')
  }
  out.push(...notes.map((n) => `- ${n}`))
  return out.join('\n')
}

const ratioText = (r: number) => Number.isFinite(r) ? `${r.toFixed(2)}x` : 'n/a'

/** Targets missed, one line each (for the console and the report's end). */
export function misses(lines: ResultLine[], ours = 'vmqtt'): string[] {
  const s = summarize(lines)
  const out: string[] = []
  for (const v of [...new Set(lines.map((l) => l.version))].sort()) {
    for (const [name, metrics] of Object.entries(TARGETS)) {
      const sc = scenarioByName(name)
      for (const [mk, t] of Object.entries(metrics)) {
        const m = sc?.metrics.find((x) => x.key === mk)
        const o = get(s, v, name, ours, mk)
        if (!m || !o) continue
        const rm = ratioCell(o, get(s, v, name, 'mosquitto', mk))
        const ra = ratioCell(o, get(s, v, name, 'aedes', mk))
        const text = verdict(m, t, rm, ra, o)
        if (text.includes('MISS')) out.push(`MQTT ${v === 5 ? '5' : '3.1.1'} ${name} ${m.label}: ${text} (vmqtt ${fmt(o.median, m.unit)}, ${ratioText(rm)} of Mosquitto, ${ratioText(ra)} of Aedes)`)
      }
    }
  }
  return out
}

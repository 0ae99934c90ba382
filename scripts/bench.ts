#!/usr/bin/env bun
/**
 * The benchmark suite (issue 4): vmqtt from source and as the compiled binary, Mosquitto 2 and
 * Aedes, side by side in one run; each broker pinned to core 0, the load generator (this
 * process and its client processes) to core 1. See scripts/bench/ and the README.
 *
 *   bun scripts/bench.ts [--scenarios fan-in,fan-out,...] [--brokers vmqtt,vmqtt-bin,mosquitto,aedes,vmqtt-acl,vmqtt@ENV=VALUE+...]
 *     [--runs 3] [--duration 5] [--warmup 1] [--version 4|5|both] [--quick] [--rate MSGS]
 *     [--connections 19000] [--conn-procs N] [--no-pin] [--rebuild] [--out bench-results]
 *   bun scripts/bench.ts --from bench-results/<time>.jsonl     (re-render the table and chart)
 *
 * Output: bench-results/<time>.jsonl (one JSON line per broker, scenario and run), <time>.md
 * (the table, also printed) and <time>.svg (throughput and p99 latency per scenario).
 */
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { brokerDefs, ensureBinary } from './bench/brokers.ts'
import type { Version } from './bench/packets.ts'
import { canPin, cleanup, pinSelf, ROOT } from './bench/proc.ts'
import { markdown, misses, type Column, type ResultLine } from './bench/report.ts'
import { scenarioByName, SCENARIOS } from './bench/scenarios/index.ts'
import { runSuite } from './bench/suite.ts'
import { chart } from './bench/svg.ts'

const { values: args } = parseArgs({
  options: {
    scenarios: { type: 'string', default: SCENARIOS.map((s) => s.name).join(',') },
    brokers: { type: 'string', default: 'vmqtt,vmqtt-bin,mosquitto,aedes' },
    runs: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    version: { type: 'string', default: 'both' },
    quick: { type: 'boolean', default: false },
    rate: { type: 'string' },
    connections: { type: 'string' },
    'conn-procs': { type: 'string', default: '0' },
    'no-pin': { type: 'boolean', default: false },
    rebuild: { type: 'boolean', default: false },
    out: { type: 'string', default: join(ROOT, 'bench-results') },
    from: { type: 'string' },
  },
})

const num = (raw: string | undefined, quick: number, full: number) => raw !== undefined ? Number(raw) : args.quick ? quick : full
const BROKER_CORE = 0, GEN_CORE = 1

function render(lines: ResultLine[], brokers: Column[], notes: string[], header: string, base: string): string {
  const md = markdown(lines, brokers, notes, header)
  writeFileSync(`${base}.md`, `${md}\n`)
  writeFileSync(`${base}.svg`, chart(lines, brokers, header.replace(/^#+ /, '').split('\n')[0]!))
  return md
}

if (args.from) {
  const all = readFileSync(args.from, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  const meta = all.find((l) => l.type === 'meta') as { brokers: Column[]; notes?: string[]; header: string } | undefined
  const lines = all.filter((l) => l.type === 'result') as ResultLine[]
  const brokers = meta?.brokers ?? [...new Set(lines.map((l) => l.broker))].map((id) => ({ id, label: id }))
  const end = all.find((l) => l.type === 'meta-end') as { notes?: string[] } | undefined
  const md = render(lines, brokers, end?.notes ?? meta?.notes ?? [], meta?.header ?? '## vmqtt benchmark', args.from.replace(/\.jsonl$/, ''))
  console.log(md)
  process.exit(0)
}

const runs = num(args.runs, 1, 3)
const durationMs = num(args.duration, 1, 5) * 1000
const warmupMs = num(args.warmup, 0.5, 1) * 1000
const connections = num(args.connections, 2000, 19000)
const versions: Version[] = args.version === 'both' ? [4, 5] : [Number(args.version) as Version]
if (versions.some((v) => v !== 4 && v !== 5)) throw new Error('--version must be 4, 5 or both')
const scenarios = args.scenarios!.split(',').map((n) => {
  const s = scenarioByName(n.trim())
  if (!s) throw new Error(`unknown scenario ${n}; known: ${SCENARIOS.map((x) => x.name).join(', ')}, qos0-pairs, fan-out-all`)
  return s
})

const notes: string[] = []
const wanted = args.brokers!.split(',').map((b) => b.trim())
if (wanted.includes('vmqtt-bin')) {
  const err = ensureBinary(args.rebuild)
  if (err) notes.push(`vmqtt-bin: ${err}`)
}
const defs = brokerDefs(wanted)
for (const id of wanted) if (!defs.some((d) => d.id === id)) throw new Error(`unknown broker ${id}; known: ${defs.map((d) => d.id).join(', ')}`)
const brokers = defs.filter((d) => wanted.includes(d.id) && !(d.missing && notes.push(`${d.label} skipped: ${d.missing}.`)))
if (brokers.some((b) => b.id === 'aedes') && versions.includes(5)) notes.push('Aedes has no MQTT 5: it runs in the MQTT 3.1.1 tables only.')
if (brokers.some((b) => b.id === 'aedes') && scenarios.some((s) => s.durable)) notes.push('persistent: Aedes runs with its in-memory persistence (no durable store in the default install), so its number is not durable.')

let pinNote: string
if (args['no-pin']) pinNote = 'no CPU pinning (--no-pin)'
else if (canPin() && pinSelf(GEN_CORE)) pinNote = `brokers pinned to core ${BROKER_CORE} (taskset -c ${BROKER_CORE}), load generator to core ${GEN_CORE}`
else pinNote = 'no CPU pinning: `taskset` (util-linux) missing or fewer than 2 cores'
notes.push(pinNote)
notes.push('msgs/s counts deliveries at the subscribers; cells are median (min-max) of the runs; latency from send time stamped in the payload; "cpu" fields in the JSON lines say which side was busy.')
notes.push('Mosquitto runs with max_inflight_messages 100 (vmqtt\'s limits.maxInflight default) and max_queued_messages 1000; persistent: persistence true, autosave_interval 1.')

const mosq = defs.find((d) => d.id === 'mosquitto')!
const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)
mkdirSync(args.out!, { recursive: true })
const base = join(args.out!, stamp)
const jsonl = `${base}.jsonl`
const columns: Column[] = brokers.map((b) => ({ id: b.id, label: b.label }))
const header = `## vmqtt benchmark ${stamp} (Bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, ${runs} run(s) of ${durationMs / 1000} s after ${warmupMs / 1000} s warm-up)`
appendFileSync(jsonl, `${JSON.stringify({ type: 'meta', time: new Date().toISOString(), header, bun: Bun.version, cpus: navigator.hardwareConcurrency, loadavg: loadavg(), pin: pinNote, runs, durationMs, warmupMs, connections, versions, scenarios: scenarios.map((s) => s.name), brokers: columns })}\n`)
console.log(`${header}\n${notes.join('\n')}\nresults: ${jsonl}\n`)

process.on('SIGINT', () => { cleanup(); process.exit(130) })
let lines: ResultLine[] = []
try {
  lines = await runSuite({
    scenarios, brokers, versions, runs, warmupMs, durationMs, connections,
    rate: args.rate !== undefined ? Number(args.rate) : null, connProcs: Number(args['conn-procs']),
    brokerCore: args['no-pin'] ? null : BROKER_CORE, mosquitto: mosq.missing ? null : mosq, jsonl, notes,
  })
} finally {
  cleanup()
}
notes.push(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
appendFileSync(jsonl, `${JSON.stringify({ type: 'meta-end', time: new Date().toISOString(), notes, loadavg: loadavg() })}\n`)
const md = render(lines, columns, notes, header, base)
const missed = misses(lines, brokers.some((b) => b.id === 'vmqtt') ? 'vmqtt' : 'vmqtt-bin')
console.log(`\n${md}\n`)
if (missed.length > 0) console.log(`Targets missed:\n${missed.map((m) => `- ${m}`).join('\n')}\n`)
console.log(`written: ${jsonl}, ${base}.md, ${base}.svg`)
process.exit(0)

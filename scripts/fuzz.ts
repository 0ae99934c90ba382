#!/usr/bin/env bun
/**
 * Long fuzz run against the broker as a child process (`bun src/main.ts`, memory store):
 *   bun scripts/fuzz.ts --cases 100000 --seed 7 [--concurrency 32] [--settle 60]
 * Each case is random or mutated packets on a fresh connection (test/helpers/fuzz.ts); a case
 * replays from (seed, number). Prints cases/s, crashes, internal errors and the broker's RSS;
 * exits 1 when the broker crashed, logged an internal error or stopped serving a normal client.
 * --settle: seconds to watch RSS after the run (0 = not at all); exits 1 as well when RSS is
 * then more than 64 MiB above its value right after start-up (README: memory after a burst).
 * MIMALLOC_* variables in this environment reach the broker (to compare allocator settings).
 */
import { parseArgs } from 'node:util'
import { BrokerProcess, FUZZ_ENV, runFuzz } from '../test/helpers/fuzz.ts'
import * as b from '../test/helpers/packet-builder.ts'
import { RawClient } from '../test/helpers/raw-client.ts'

const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '100000' },
    seed: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '32' },
    settle: { type: 'string', default: '60' },
  },
})
const cases = Number(values.cases)
const seed = Number(values.seed)
const concurrency = Number(values.concurrency)
const settle = Number(values.settle)
/** RSS growth over the start-up value allowed once the run has settled. */
const SETTLE_TARGET = 64 * 1048576
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`

/** A normal client: subscribe, publish QoS 1, receive it back. */
async function roundTrip(port: number): Promise<void> {
  const { client } = await RawClient.open(port, { version: 5, clientId: 'fuzz-check' })
  try {
    client.send(b.subscribe(1, [{ topic: 'check/t', qos: 1 }], { version: 5 }))
    await client.nextOf('suback')
    client.send(b.publish({ topic: 'check/t', payload: 'ok', qos: 1, packetId: 2, version: 5 }))
    const p = await client.nextOf('publish')
    if (p.cmd !== 'publish' || p.payload.toString() !== 'ok') throw new Error('round trip: wrong message')
  } finally {
    await client.close()
  }
}

await using broker = await BrokerProcess.start(FUZZ_ENV).then(({ broker, port }) => Object.assign(broker, { port }))
const port = broker.port
const rssStart = broker.rss()
// warm-up: the first cases bring in the JIT, the codec paths and the buffers every run uses
const warm = Math.min(2000, Math.ceil(cases / 20))
await runFuzz(port, { seed, cases: warm, concurrency, first: cases })
const rssBefore = broker.rss()
console.log(`seed ${seed}: ${cases} cases, concurrency ${concurrency}, broker pid ${broker.proc.pid}, RSS after ${warm} warm-up cases ${mib(rssBefore)}`)
let peak = rssBefore
const r = await runFuzz(port, {
  seed, cases, concurrency,
  onProgress: (done) => {
    if (done % 10_000 !== 0) return
    const rss = broker.alive ? broker.rss() : 0
    peak = Math.max(peak, rss)
    console.log(`  ${done} cases, RSS ${mib(rss)}`)
  },
})
const crashed = !broker.alive
const rssAfter = crashed ? 0 : broker.rss()
let served = false
if (!crashed) {
  try { await roundTrip(port); served = true } catch (e) { console.log(`normal client failed: ${(e as Error).message}`) }
}
const errors = broker.errors()
console.log(`cases:            ${r.cases} in ${(r.ms / 1000).toFixed(1)} s (${Math.round(r.cases / (r.ms / 1000))} cases/s)`)
console.log(`crashes:          ${crashed ? 1 : 0}${crashed ? ` (exit ${broker.proc.exitCode}, signal ${broker.proc.signalCode})` : ''}`)
console.log(`internal errors:  ${errors.length}`)
for (const e of errors.slice(0, 5)) console.log(`  ${JSON.stringify(e).slice(0, 400)}`)
console.log(`not closed in 5s: ${r.timeouts}`)
console.log(`RSS:              before ${mib(rssBefore)}, peak ${mib(peak)}, after ${mib(rssAfter)}`)
console.log(`normal client:    ${served ? 'round trip ok' : 'FAILED'}`)
let settled = true
if (settle > 0 && !crashed) {
  // returning memory to the OS happens on timers (allocator, idle collection): sampled, no event to wait on
  const samples: string[] = []
  for (let t = 0; t < settle;) {
    const step = Math.min(10, settle - t)
    await Bun.sleep(step * 1000)
    t += step
    samples.push(`${t} s ${mib(broker.rss())}`)
  }
  const grown = broker.rss() - rssStart
  settled = grown <= SETTLE_TARGET
  console.log(`RSS after run:    ${samples.join(', ')}`)
  console.log(`settled:          ${mib(grown)} above start-up (${mib(rssStart)}) ${settle} s after the run: ${settled ? 'within' : 'MORE than'} ${mib(SETTLE_TARGET)}`)
}
process.exitCode = crashed || errors.length > 0 || !served || r.timeouts > 0 || !settled ? 1 : 0

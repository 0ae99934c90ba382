#!/usr/bin/env bun
/**
 * Kill -9 torture of the SQLite store (issue 3), longer than the CI test.
 *
 *   bun scripts/torture.ts --cycles 100 --durability fsync|process --seed N [--min-up 50] [--max-up 600] [--commit-interval MS] [--root DIR] [--data-dir DIR (kept)] [--quiet]
 *     [--overflow refuse|drop-oldest|drop-new --max-queued 100 [--offline MS] [--late-chance 0.6] [--no-kill]]
 *
 * --overflow: subscribers stay away long enough to overflow a small queue bound. refuse must
 * lose nothing (with kills); drop-oldest / drop-new need --no-kill and must lose exactly the
 * drops the broker counted ($SYS/broker/messages/dropped/queue-*).
 *
 * Prints one line per cycle and a summary; exits 1 when a check failed. The same seed replays
 * the same kill moments and late reconnects (thread timing still varies).
 */
import { parseArgs } from 'node:util'
import { runTorture, summary } from '../test/helpers/torture.ts'

const { values } = parseArgs({
  options: {
    cycles: { type: 'string', default: '100' },
    durability: { type: 'string', default: 'fsync' },
    seed: { type: 'string' },
    'min-up': { type: 'string', default: '50' },
    'max-up': { type: 'string', default: '600' },
    window: { type: 'string', default: '10' },
    'commit-interval': { type: 'string', default: '0' },
    root: { type: 'string' },
    'data-dir': { type: 'string' },
    quiet: { type: 'boolean', default: false },
    overflow: { type: 'string' },
    'max-queued': { type: 'string', default: '100' },
    offline: { type: 'string' },
    'late-chance': { type: 'string' },
    'no-kill': { type: 'boolean', default: false },
  },
})

const num = (name: string, raw: string | undefined): number => {
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`torture: --${name} must be a whole number, got ${raw}\n`)
    process.exit(2)
  }
  return n
}

const durability = values.durability
if (durability !== 'fsync' && durability !== 'process') {
  process.stderr.write(`torture: --durability must be fsync or process, got ${durability}\n`)
  process.exit(2)
}
const policy = values.overflow
if (policy !== undefined && policy !== 'refuse' && policy !== 'drop-oldest' && policy !== 'drop-new') {
  process.stderr.write(`torture: --overflow must be refuse, drop-oldest or drop-new, got ${policy}\n`)
  process.exit(2)
}
if (policy !== undefined && policy !== 'refuse' && !values['no-kill']) {
  process.stderr.write('torture: --overflow drop-oldest / drop-new needs --no-kill (the drop counters live in the broker process)\n')
  process.exit(2)
}
const seed = values.seed !== undefined ? num('seed', values.seed) : Math.floor(Math.random() * 2 ** 31)
const cycles = num('cycles', values.cycles)
console.log(`torture: seed ${seed}, ${cycles} cycles, durability ${durability}`)

const report = await runTorture({
  cycles, seed, durability,
  minUpMs: num('min-up', values['min-up']), maxUpMs: num('max-up', values['max-up']), window: Math.max(1, num('window', values.window)),
  env: { VMQTT_DATA_COMMIT_INTERVAL: String(num('commit-interval', values['commit-interval'])) },
  root: values.root,
  dataDir: values['data-dir'],
  log: values.quiet ? undefined : (line) => console.log(line),
  ...(policy !== undefined ? { overflow: { policy, maxQueued: num('max-queued', values['max-queued']) }, lateChance: 0.6 } : {}),
  ...(values['late-chance'] !== undefined ? { lateChance: Number(values['late-chance']) } : {}),
  ...(values.offline !== undefined ? { offlineMs: num('offline', values.offline) } : {}),
  kill: !values['no-kill'],
})
console.log(summary(report))
process.exit(report.ok ? 0 : 1)

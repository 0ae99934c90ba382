#!/usr/bin/env bun
/**
 * Kill -9 torture of the SQLite store (issue 3), longer than the CI test.
 *
 *   bun scripts/torture.ts --cycles 100 --durability fsync|process --seed N [--min-up 50] [--max-up 600] [--commit-interval MS] [--root DIR] [--data-dir DIR (kept)] [--quiet]
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
})
console.log(summary(report))
process.exit(report.ok ? 0 : 1)

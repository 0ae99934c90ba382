/** Latency histogram, medians and spreads, and what /proc says about a process. */
import { readFileSync } from 'node:fs'

const BUCKETS = 64 + 25 * 32

/**
 * Latencies in microseconds, log-linear buckets: exact below 64 us, then 32 buckets per power
 * of two (about 3 % resolution) up to ~35 minutes. Recording is a few integer operations.
 */
export class Histogram {
  readonly counts = new Float64Array(BUCKETS)
  count = 0
  max = 0

  record(us: number): void {
    let v = us < 0 ? 0 : us > 0x7fffffff ? 0x7fffffff : Math.round(us)
    if (v > this.max) this.max = v
    this.count++
    if (v < 64) { this.counts[v]!++; return }
    const e = 31 - Math.clz32(v)
    v = 64 + (e - 6) * 32 + ((v >> (e - 5)) - 32)
    this.counts[v]!++
  }

  /** The p-th percentile (0-100) in milliseconds (bucket midpoint), NaN when empty. */
  percentile(p: number): number {
    if (this.count === 0) return NaN
    const rank = Math.max(1, Math.ceil((p / 100) * this.count))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!
      if (seen >= rank) return Math.min(bucketMid(i), this.max) / 1000
    }
    return this.max / 1000
  }

  reset(): void { this.counts.fill(0); this.count = 0; this.max = 0 }
}

function bucketMid(i: number): number {
  if (i < 64) return i
  const e = 6 + Math.floor((i - 64) / 32)
  const m = 32 + ((i - 64) % 32)
  return ((m << (e - 5)) + ((m + 1) << (e - 5))) / 2
}

export interface Spread { median: number; min: number; max: number; n: number }

export function spread(xs: number[]): Spread {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 }
  const mid = v.length >> 1
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length }
}

const CLK_TCK = 100

/** CPU seconds (user + system, all threads) a process has used, or NaN when it is gone. */
export function procCpuSeconds(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / CLK_TCK
  } catch { return NaN }
}

/** Minor page faults a process has taken (all threads), or NaN when it is gone. */
export function procMinorFaults(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[7])
  } catch { return NaN }
}

/** Resident set size in bytes (VmRSS of /proc/<pid>/status), or NaN. */
export function procRssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : NaN
  } catch { return NaN }
}

/** Measures CPU use of the broker and of this process (the load generator) over an interval. */
export class CpuMeter {
  #pid: number
  #b0 = 0
  #g0 = 0
  #t0 = 0
  #f0 = 0

  constructor(brokerPid: number) { this.#pid = brokerPid }

  start(): void {
    this.#b0 = procCpuSeconds(this.#pid)
    this.#f0 = procMinorFaults(this.#pid)
    const u = process.cpuUsage()
    this.#g0 = (u.user + u.system) / 1e6
    this.#t0 = performance.now()
  }

  /** Percent of one core used since start() by the broker and by the generator; the broker's
   * minor page faults per second (memory the allocator returned to the OS and touched again). */
  stop(): { brokerCpuPct: number; genCpuPct: number; brokerFaultsPerSec: number } {
    const secs = (performance.now() - this.#t0) / 1000
    const u = process.cpuUsage()
    return {
      brokerCpuPct: Math.round(((procCpuSeconds(this.#pid) - this.#b0) / secs) * 100),
      genCpuPct: Math.round((((u.user + u.system) / 1e6 - this.#g0) / secs) * 100),
      brokerFaultsPerSec: Math.round((procMinorFaults(this.#pid) - this.#f0) / secs),
    }
  }
}

import { readFileSync } from 'node:fs'
import { totalmem } from 'node:os'

/**
 * The default of limits.memory ("auto"): a quarter of the memory the process may use, which is
 * the smallest of the cgroup limits on its way to the root (cgroup v2 memory.max, v1
 * memory.limit_in_bytes) and the machine's RAM.
 *
 * Why a quarter: the budget counts the bytes of buffers (unsent output, incomplete packets,
 * queued messages), not what they cost. Each buffer also costs its JavaScript object and
 * allocator rounding, freed buffers stay until the next garbage collection, and the rest of
 * the broker (sessions, subscriptions, retained messages, the JIT, SQLite's cache, ~50 MiB at
 * start) is outside the budget. A full budget can therefore take about twice its size in RSS;
 * a quarter keeps that at half of the limit, so the broker degrades (drops, disconnects,
 * refusals) instead of being OOM-killed.
 */
export const AUTO_FRACTION = 4

/** Reads a file as text, null when it cannot be read. */
export type ReadText = (path: string) => string | null

const readText: ReadText = (path) => {
  try { return readFileSync(path, 'utf8') } catch { return null }
}

/** A cgroup limit file's value in bytes; null for "max", unlimited (v1: ~2^63) or unreadable. */
export function parseLimit(text: string | null): number | null {
  if (text === null) return null
  const t = text.trim()
  if (!/^\d+$/.test(t)) return null
  const n = Number(t)
  // cgroup v1 writes "no limit" as the largest page-aligned 64-bit value
  return n > 0 && n < 2 ** 60 ? n : null
}

/** The cgroup paths of this process from /proc/self/cgroup: the v2 one (0::) and v1 memory's. */
export function parseProcCgroup(text: string | null): { v2: string | null; v1: string | null } {
  let v2: string | null = null
  let v1: string | null = null
  for (const line of (text ?? '').split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim())
    if (m === null) continue
    if (m[1] === '0' && m[2] === '') v2 = m[3]!
    else if (m[2]!.split(',').includes('memory')) v1 = m[3]!
  }
  return { v2, v1 }
}

/** Directories from `root + path` up to `root` (a limit higher up applies too). */
function upwards(root: string, path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '..')
  const out: string[] = []
  for (let i = parts.length; i >= 0; i--) out.push([root, ...parts.slice(0, i)].join('/'))
  return out
}

/** The smallest cgroup memory limit that applies to this process, null when none does. */
export function cgroupLimit(read: ReadText = readText): number | null {
  const { v2, v1 } = parseProcCgroup(read('/proc/self/cgroup'))
  let min: number | null = null
  const consider = (file: string) => {
    const n = parseLimit(read(file))
    if (n !== null && (min === null || n < min)) min = n
  }
  // in a container the cgroup filesystem is often mounted at the process's own cgroup, so the
  // path from /proc/self/cgroup may not exist below the mount: its root is tried as well
  if (v2 !== null) for (const dir of upwards('/sys/fs/cgroup', v2)) consider(`${dir}/memory.max`)
  if (v1 !== null) for (const dir of upwards('/sys/fs/cgroup/memory', v1)) consider(`${dir}/memory.limit_in_bytes`)
  return min
}

/** limits.memory in bytes (0 = no budget): "auto" becomes a quarter of the available memory. */
export function memoryBudgetBytes(setting: number | 'auto', read: ReadText = readText, total: number = totalmem()): number {
  if (setting !== 'auto') return setting
  const cg = cgroupLimit(read)
  const avail = cg !== null && cg < total ? cg : total
  return Math.floor(avail / AUTO_FRACTION)
}

/** Child processes, temp dirs and CPU pinning shared by the launchers and the workers. */
import type { Subprocess } from 'bun'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const ROOT = join(import.meta.dir, '..', '..')

const children = new Set<Subprocess>()
const dirs = new Set<string>()

export function track<T extends Subprocess>(child: T): T { children.add(child); return child }

export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix))
  dirs.add(d)
  return d
}

export function removeDir(d: string): void {
  rmSync(d, { recursive: true, force: true })
  dirs.delete(d)
}

/** Kills what is still running and removes the temp dirs (on exit and on Ctrl-C). */
export function cleanup(): void {
  for (const c of children) { try { c.kill('SIGKILL') } catch { /* gone */ } }
  children.clear()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
  dirs.clear()
}

export async function stopChild(child: Subprocess, graceMs = 15_000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
  const t = setTimeout(() => { try { child.kill('SIGKILL') } catch { /* gone */ } }, graceMs)
  await child.exited
  clearTimeout(t)
  children.delete(child)
}

let tasksetChecked: boolean | null = null
/** Whether `taskset` (util-linux) is there and we have at least two cores to pin to. */
export function canPin(): boolean {
  if (tasksetChecked === null) tasksetChecked = Bun.which('taskset') !== null && navigator.hardwareConcurrency >= 2
  return tasksetChecked
}

/** The command prefixed with `taskset -c core` when pinning is possible and wanted. */
export function pinned(cmd: string[], core: number | null): string[] {
  return core !== null && canPin() ? ['taskset', '-c', String(core), ...cmd] : cmd
}

/** Pins every thread of this process (and so the children it starts later) to one core. */
export function pinSelf(core: number): boolean {
  if (!canPin()) return false
  const r = Bun.spawnSync(['taskset', '-a', '-p', '-c', String(core), String(process.pid)], { stdout: 'ignore', stderr: 'pipe' })
  return r.exitCode === 0
}

/** Reads a child's output line by line (forever, so the pipe never fills) until `match`. */
export function watchLines(stream: ReadableStream<Uint8Array>, log: string[], match: (line: string) => boolean, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not ready after ${timeoutMs / 1000} s; output:\n${log.slice(-20).join('\n')}`)), timeoutMs)
    const reader = stream.getReader()
    const dec = new TextDecoder()
    let text = '', found = false
    void (async () => {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) { clearTimeout(t); if (!found) reject(new Error(`exited before ready; output:\n${log.slice(-20).join('\n')}`)); return }
        text += dec.decode(value, { stream: true })
        let nl: number
        while ((nl = text.indexOf('\n')) >= 0) {
          const line = text.slice(0, nl)
          text = text.slice(nl + 1)
          if (log.length < 10_000) log.push(line)
          if (!found && match(line)) { found = true; clearTimeout(t); resolve(line) }
        }
      }
    })()
  })
}

export async function freePort(): Promise<number> {
  const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = l.port
  l.stop(true)
  return port
}

/** Waits until something accepts TCP connections on the port (or the child exits). */
export async function waitForPort(port: number, child: Subprocess, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited with ${child.exitCode ?? child.signalCode} before listening`)
    const ok = await new Promise<boolean>((resolve) => {
      Bun.connect({ hostname: '127.0.0.1', port, socket: { open: (s) => { s.end(); resolve(true) }, data() {}, connectError: () => resolve(false), error: () => resolve(false) } })
        .catch(() => resolve(false))
    })
    if (ok) return
    await Bun.sleep(20)
  }
  throw new Error(`nothing listening on ${port} after ${timeoutMs / 1000} s`)
}

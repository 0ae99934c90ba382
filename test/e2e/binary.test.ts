import { afterAll, beforeAll, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'

const root = join(import.meta.dir, '..', '..')
let work: string
let binary: string

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'vmqtt-e2e-'))
  binary = join(work, 'bin', 'vmqtt')
  const build = Bun.spawnSync([process.execPath, 'build', '--compile', '--bytecode', '--format=esm', join(root, 'src', 'main.ts'), '--outfile', binary], { cwd: root })
  if (build.exitCode !== 0) throw new Error(`compile failed: ${build.stderr.toString()}`)
}, 120_000)

afterAll(() => {
  rmSync(work, { recursive: true, force: true })
})

/** Reads JSON log lines from the child's stdout until one satisfies pred. */
async function waitForLog(reader: { read(): Promise<{ value?: Uint8Array; done: boolean }> }, pred: (l: Record<string, unknown>) => boolean, ms = 10_000): Promise<Record<string, unknown>> {
  const decoder = new TextDecoder()
  let buf = ''
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const timeout = new Promise<never>((_, rej) => setTimeout(() => rej(new Error('timed out waiting for log line')), deadline - Date.now()))
    const { value, done } = await Promise.race([reader.read(), timeout])
    if (done) throw new Error('process ended before the expected log line')
    buf += decoder.decode(value, { stream: true })
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      try {
        const obj = JSON.parse(line) as Record<string, unknown>
        if (pred(obj)) return obj
      } catch { /* not JSON */ }
    }
  }
  throw new Error('timed out waiting for log line')
}

test('the compiled binary runs from another directory with env config and serves MQTT.js', async () => {
  const cwd = mkdtempSync(join(work, 'run-'))
  const child = Bun.spawn([binary], {
    cwd,
    env: { PATH: process.env.PATH ?? '', VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off', VMQTT_DATA_DIR: join(cwd, 'data') },
    stdout: 'pipe', stderr: 'pipe',
  })
  try {
    const reader = child.stdout.getReader()
    const line = await waitForLog(reader, (l) => l.msg === 'mqtt listening')
    const port = line.port as number
    expect(port).toBeGreaterThan(0)
    // the binary replaced itself (same pid) with the allocator setting of src/runtime.ts
    expect(readFileSync(`/proc/${child.pid}/environ`, 'latin1').split('\0')).toContain('MIMALLOC_PURGE_DELAY=1000')
    const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, clientId: 'e2e-sub' })
    const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: 'e2e-pub' })
    await sub.subscribeAsync('e2e/#', { qos: 1 })
    const got = new Promise<string>((resolve) => sub.on('message', (t, m) => resolve(`${t}=${m}`)))
    await pub.publishAsync('e2e/x', 'hello', { qos: 1 })
    expect(await got).toBe('e2e/x=hello')
    await pub.endAsync()
    await sub.endAsync()
    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
    expect(existsSync(binary)).toBe(true)
  } finally {
    child.kill('SIGKILL')
  }
}, 30_000)

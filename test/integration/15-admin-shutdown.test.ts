/**
 * The real CLI as a child process: startup log lines, admin /health and /ready, graceful
 * shutdown on SIGTERM and SIGINT (v5 clients get DISCONNECT 0x8B, exit code 0), and the
 * `config check`, `config print` and `version` commands.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import pkg from '../../package.json' with { type: 'json' }
import * as b from '../helpers/packet-builder.ts'
import { readLogLines } from '../helpers/log-lines.ts'
import { RawClient } from '../helpers/raw-client.ts'

const ROOT = join(import.meta.dir, '..', '..')
const SERVER_SHUTTING_DOWN = 0x8b

type LogLine = Record<string, unknown>

/** The parent environment without VMQTT_* variables (unknown ones make the CLI refuse to start)
 * and without MIMALLOC_* ones (the start command sets those itself, see src/runtime.ts). */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VMQTT_') && !k.startsWith('MIMALLOC_') && v !== undefined) env[k] = v
  return env
}

/** The environment of a running process, from /proc (Linux). */
function environOf(pid: number): Record<string, string> {
  const out: Record<string, string> = {}
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')) {
    const eq = kv.indexOf('=')
    if (eq > 0) out[kv.slice(0, eq)] = kv.slice(eq + 1)
  }
  return out
}

/** Names of the threads of a running process (Linux). */
const threadNames = (pid: number) => readdirSync(`/proc/${pid}/task`).map((t) => readFileSync(`/proc/${pid}/task/${t}/comm`, 'latin1').trim())

/** A running `src/main.ts` with its JSON log lines collected as they arrive. */
class Cli {
  readonly proc: Subprocess<'ignore', 'pipe', 'pipe'>
  readonly lines: LogLine[] = []
  readonly dataDir: string
  #wakers = new Set<() => void>()
  #stdoutDone: Promise<void>
  stderr: Promise<string>

  constructor(env: Record<string, string>, args: string[] = []) {
    this.dataDir = mkdtempSync(join(tmpdir(), 'vmqtt-cli-'))
    this.proc = Bun.spawn([process.execPath, 'src/main.ts', ...args], {
      cwd: ROOT,
      env: {
        ...baseEnv(), VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: '0', VMQTT_MQTT_HOST: '127.0.0.1',
        VMQTT_ADMIN_HOST: '127.0.0.1', VMQTT_DATA_DIR: this.dataDir, ...env,
      },
      stdin: 'ignore', stdout: 'pipe', stderr: 'pipe',
    })
    this.#stdoutDone = this.#read()
    this.stderr = new Response(this.proc.stderr).text()
  }

  #read(): Promise<void> {
    return readLogLines(this.proc.stdout, this.lines as Record<string, unknown>[], () => { for (const w of [...this.#wakers]) w() })
  }

  /** Resolves with the first log line with this msg, waiting for it (or failing when the process ends). */
  waitForLog(msg: string, ms = 8000): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.find((l) => l.msg === msg)
        if (hit !== undefined) { done(); resolve(hit); return }
        if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
          done()
          void this.stderr.then((err) => reject(new Error(`process ended before log line "${msg}"; stderr: ${err}; stdout: ${JSON.stringify(this.lines)}`)))
        }
      }
      const timer = setTimeout(() => { done(); reject(new Error(`timed out after ${ms}ms waiting for log line "${msg}"; stdout: ${JSON.stringify(this.lines)}`)) }, ms)
      const done = () => { clearTimeout(timer); this.#wakers.delete(check) }
      this.#wakers.add(check)
      void this.proc.exited.then(() => this.#stdoutDone).then(check)
      check()
    })
  }

  /** Waits for the process to end; returns its exit code (after stdout has been read fully). */
  async exited(ms = 8000): Promise<number> {
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`process did not exit within ${ms}ms`)), ms))
    const code = await Promise.race([this.proc.exited, timeout])
    await this.#stdoutDone
    return code
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGKILL')
      await this.proc.exited
    }
    rmSync(this.dataDir, { recursive: true, force: true })
  }
}

/** Runs a short CLI command to completion. */
async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', ...args], {
    cwd: ROOT, env: { ...baseEnv(), ...env }, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe',
  })
  try {
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
    return { code, stdout, stderr }
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  }
}

describe('vmqtt start', () => {
  test.concurrent('logs its ports, serves /health and /ready, and on SIGTERM sends DISCONNECT 0x8B and exits 0', async () => {
    await using cli = new Cli({})
    const mqttLine = await cli.waitForLog('mqtt listening')
    const adminLine = await cli.waitForLog('admin listening')
    const mqttPort = mqttLine.port as number
    const adminPort = adminLine.port as number
    expect(mqttPort).toBeGreaterThan(0)
    expect(adminPort).toBeGreaterThan(0)
    expect(adminPort).not.toBe(mqttPort)

    const health = await fetch(`http://127.0.0.1:${adminPort}/health`)
    expect(health.status).toBe(200)
    expect(health.headers.get('content-type')).toContain('application/json')
    expect(await health.json()).toEqual({ status: 'ok' })

    const ready = await fetch(`http://127.0.0.1:${adminPort}/ready`)
    expect(ready.status).toBe(200)
    expect(ready.headers.get('content-type')).toContain('application/json')
    expect(await ready.json()).toMatchObject({ ready: true })

    const { client: v5, connack } = await RawClient.open(mqttPort, { version: 5, clientId: 'cli-v5' })
    const { client: v4 } = await RawClient.open(mqttPort, { version: 4, clientId: 'cli-v4' })
    try {
      expect(connack.cmd === 'connack' ? connack.reasonCode : -1).toBe(0)
      // the connection works end to end before the shutdown
      v5.send(b.subscribe(1, [{ topic: 'cli/t', qos: 0 }], { version: 5 }))
      await v5.nextOf('suback')
      v4.send(b.publish({ topic: 'cli/t', payload: 'before', version: 4 }))
      const p = await v5.nextOf('publish')
      expect(p.cmd === 'publish' ? p.payload.toString() : p.cmd).toBe('before')

      cli.proc.kill('SIGTERM')
      const d = await v5.next()
      expect(d.cmd).toBe('disconnect')
      expect(d.cmd === 'disconnect' ? d.reasonCode : -1).toBe(SERVER_SHUTTING_DOWN)
      await v5.closed()
      // v3.1.1 has no server DISCONNECT: the connection is just closed
      await v4.closed()
      await expect(v4.next(100)).rejects.toThrow(/closed/)
      expect(await cli.exited()).toBe(0)
      expect(cli.lines.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM')).toBe(true)
    } finally {
      v5.destroy()
      v4.destroy()
    }
  }, 15_000)

  test.concurrent('SIGINT also shuts down gracefully with exit code 0', async () => {
    await using cli = new Cli({})
    const mqttPort = (await cli.waitForLog('mqtt listening')).port as number
    await cli.waitForLog('admin listening')
    const { client } = await RawClient.open(mqttPort, { version: 5, clientId: 'cli-int' })
    try {
      cli.proc.kill('SIGINT')
      const d = await client.next()
      expect(d.cmd === 'disconnect' ? d.reasonCode : d.cmd).toBe(SERVER_SHUTTING_DOWN)
      await client.closed()
      expect(await cli.exited()).toBe(0)
      expect(cli.lines.some((l) => l.msg === 'shutting down' && l.signal === 'SIGINT')).toBe(true)
    } finally {
      client.destroy()
    }
  }, 15_000)

  test.concurrent('an admin port of "off" disables the admin listener', async () => {
    await using cli = new Cli({ VMQTT_ADMIN_PORT: 'off' })
    const mqttPort = (await cli.waitForLog('mqtt listening')).port as number
    // the broker serves MQTT, so startup is complete
    const { client, connack } = await RawClient.open(mqttPort, { version: 4, clientId: 'cli-off' })
    expect(connack.cmd === 'connack' ? connack.returnCode : -1).toBe(0)
    await client.close()
    cli.proc.kill('SIGTERM')
    expect(await cli.exited()).toBe(0)
    // every line the process wrote has been read: none announces an admin listener
    expect(cli.lines.some((l) => l.msg === 'mqtt listening')).toBe(true)
    expect(cli.lines.some((l) => l.msg === 'stopped')).toBe(true)
    expect(cli.lines.filter((l) => l.msg === 'admin listening')).toEqual([])
  }, 15_000)

  test.concurrent('an MQTT port of "off" with the admin listener on: /ready is 200 and no mqtt listener is logged', async () => {
    await using cli = new Cli({ VMQTT_MQTT_PORT: 'off' })
    const adminPort = (await cli.waitForLog('admin listening')).port as number
    const ready = await fetch(`http://127.0.0.1:${adminPort}/ready`)
    expect(ready.status).toBe(200)
    cli.proc.kill('SIGTERM')
    expect(await cli.exited()).toBe(0)
    expect(cli.lines.filter((l) => l.msg === 'mqtt listening')).toEqual([])
  }, 15_000)

  test.concurrent('start replaces itself once (same pid) with MIMALLOC_PURGE_DELAY=1000 (README: Memory)', async () => {
    await using cli = new Cli({})
    await cli.waitForLog('admin listening')
    // read through the pid Bun.spawn returned: execve kept it
    expect(environOf(cli.proc.pid).MIMALLOC_PURGE_DELAY).toBe('1000')
    expect(cli.lines.filter((l) => l.msg === 'mqtt listening')).toHaveLength(1)
    cli.proc.kill('SIGTERM')
    expect(await cli.exited()).toBe(0)
  }, 15_000)

  test.concurrent('a MIMALLOC_PURGE_DELAY set by the user is kept (-1: no mimalloc scavenger thread)', async () => {
    await using cli = new Cli({ MIMALLOC_PURGE_DELAY: '-1' })
    await cli.waitForLog('admin listening')
    expect(environOf(cli.proc.pid).MIMALLOC_PURGE_DELAY).toBe('-1')
    expect(threadNames(cli.proc.pid)).not.toContain('mi-scavenger')
    cli.proc.kill('SIGTERM')
    expect(await cli.exited()).toBe(0)
  }, 15_000)
})

describe('vmqtt config and version', () => {
  test.concurrent('config check with VMQTT_MQTT_PORT=abc exits 1 and names mqtt.port, VMQTT_MQTT_PORT and the value', async () => {
    const r = await run(['config', 'check'], { VMQTT_MQTT_PORT: 'abc' })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('mqtt.port')
    expect(r.stderr).toContain('VMQTT_MQTT_PORT')
    expect(r.stderr).toContain('abc')
  }, 15_000)

  test.concurrent('config check with a valid environment exits 0', async () => {
    const r = await run(['config', 'check'], { VMQTT_MQTT_PORT: '1884', VMQTT_LIMITS_MAX_QOS: '1' })
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
  }, 15_000)

  test.concurrent('config check refuses an unknown VMQTT_ variable', async () => {
    const r = await run(['config', 'check'], { VMQTT_NO_SUCH_KEY: '1' })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('VMQTT_NO_SUCH_KEY')
  }, 15_000)

  test.concurrent('config print prints the effective configuration as JSON with env overrides applied', async () => {
    const r = await run(['config', 'print'], {
      VMQTT_MQTT_PORT: '1999', VMQTT_ADMIN_PORT: 'off', VMQTT_LIMITS_MAX_QOS: '1',
      VMQTT_SESSION_QUEUE_QOS0: 'true', VMQTT_SYS_INTERVAL: '5', VMQTT_DATA_DIR: '/tmp/vmqtt-print',
    })
    expect(r.code).toBe(0)
    const cfg = JSON.parse(r.stdout) as Record<string, Record<string, unknown>>
    expect(cfg.mqtt).toMatchObject({ port: 1999, host: '0.0.0.0' })
    expect(cfg.admin!.port).toBe('off')
    expect(cfg.limits).toMatchObject({ maxQos: 1, maxPacketSize: 16 * 1024 * 1024 })
    expect(cfg.session!.queueQos0).toBe(true)
    expect(cfg.sys!.interval).toBe(5)
    expect(cfg.data!.dir).toBe('/tmp/vmqtt-print')
  }, 15_000)

  test.concurrent('version prints the package version', async () => {
    const r = await run(['version'])
    expect(r.code).toBe(0)
    expect(r.stdout.trim()).toBe(`vmqtt ${pkg.version}`)
  }, 15_000)
})

/**
 * The data directory on bad and unusual disks, in process (createBroker(config).start()) and
 * through the CLI as a child process: a missing directory is created; a directory path that is a
 * regular file, a corrupt vmqtt.db, a database locked by another running vmqtt and a database
 * from a newer schema version stop the start with a clear message (path, cause, what to do) and
 * exit code 1, without touching the user's file; the first broker keeps serving.
 */
import { describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet'
import { createBroker } from '../../src/broker/broker.ts'
import { loadConfig } from '../../src/config/load.ts'
import { StoreError } from '../../src/store/types.ts'
import * as b from '../helpers/packet-builder.ts'
import { readLogLines } from '../helpers/log-lines.ts'
import { RawClient } from '../helpers/raw-client.ts'

const ROOT = join(import.meta.dir, '..', '..')

/** A temporary directory removed at the end of the test. */
function tempDir(): { path: string } & Disposable {
  const path = mkdtempSync(join(tmpdir(), 'vmqtt-datadir-'))
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) }
}

function config(dataDir: string) {
  return loadConfig({
    env: {
      VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off', VMQTT_LOG_LEVEL: 'silent',
      VMQTT_SYS_INTERVAL: '0', VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: dataDir,
    },
  })
}

/** Starts an in-process broker; returns the StoreError it failed with (fails the test if it started). */
async function startFails(dataDir: string): Promise<StoreError> {
  const broker = createBroker(config(dataDir))
  let started = false
  try {
    await broker.start()
    started = true
  } catch (e) {
    expect(e).toBeInstanceOf(StoreError)
    return e as StoreError
  } finally {
    if (started) await broker.close()
  }
  throw new Error(`the broker started on ${dataDir}`)
}

/** The parent environment without VMQTT_* variables (unknown ones make the CLI refuse to start). */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VMQTT_') && v !== undefined) env[k] = v
  return env
}

/** `bun src/main.ts` on a data dir, its stdout JSON lines collected as they arrive. */
class Cli implements AsyncDisposable {
  readonly proc: Subprocess<'ignore', 'pipe', 'pipe'>
  readonly lines: Record<string, unknown>[] = []
  readonly stderr: Promise<string>
  readonly #stdoutDone: Promise<void>
  #wake = new Set<() => void>()

  constructor(dataDir: string, env: Record<string, string> = {}) {
    this.proc = Bun.spawn([process.execPath, 'src/main.ts'], {
      cwd: ROOT,
      env: { ...baseEnv(), VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_ADMIN_PORT: 'off', VMQTT_SYS_INTERVAL: '0', VMQTT_DATA_DIR: dataDir, ...env },
      stdin: 'ignore', stdout: 'pipe', stderr: 'pipe',
    })
    this.stderr = new Response(this.proc.stderr).text()
    this.#stdoutDone = this.#read()
  }

  #read(): Promise<void> {
    return readLogLines(this.proc.stdout, this.lines as Record<string, unknown>[], () => { for (const w of [...this.#wake]) w() })
  }

  /** The MQTT port, from the "mqtt listening" log line. */
  listening(ms = 8000): Promise<number> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.find((l) => l.msg === 'mqtt listening')
        if (hit !== undefined) { done(); resolve(hit.port as number); return }
        if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
          done()
          void this.stderr.then((err) => reject(new Error(`vmqtt exited (${this.proc.exitCode}) before listening; stderr: ${err}; stdout: ${JSON.stringify(this.lines)}`)))
        }
      }
      const timer = setTimeout(() => { done(); reject(new Error(`vmqtt did not log "mqtt listening" within ${ms}ms: ${JSON.stringify(this.lines)}`)) }, ms)
      const done = () => { clearTimeout(timer); this.#wake.delete(check) }
      this.#wake.add(check)
      void this.proc.exited.then(() => this.#stdoutDone).then(check)
      check()
    })
  }

  /** Exit code and stderr once the process has ended on its own. */
  async result(ms = 8000): Promise<{ code: number; stderr: string }> {
    let timer: ReturnType<typeof setTimeout> | undefined
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`vmqtt did not exit within ${ms}ms; stdout: ${JSON.stringify(this.lines)}`)), ms) })
    try {
      const code = await Promise.race([this.proc.exited, timeout])
      await this.#stdoutDone
      return { code, stderr: await this.stderr }
    } finally {
      clearTimeout(timer)
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGKILL')
      await this.proc.exited
    }
  }
}

/** A CLI start that must fail: exit code 1, one clear line on stderr; returns that line. */
async function cliFails(dataDir: string, env: Record<string, string> = {}): Promise<string> {
  await using cli = new Cli(dataDir, env)
  const { code, stderr } = await cli.result()
  expect(code).toBe(1)
  const line = stderr.split('\n').find((l) => l.startsWith('vmqtt: cannot start:'))
  if (line === undefined) throw new Error(`no "vmqtt: cannot start:" line on stderr: ${JSON.stringify(stderr)}`)
  expect(cli.lines.some((l) => l.msg === 'mqtt listening')).toBe(false)
  return line
}

/** A QoS 1 round trip through the broker on port: it is alive and serving. */
async function roundTrip(port: number, tag: string): Promise<void> {
  const { client: sub, connack } = await RawClient.open(port, { version: 5, clientId: `sub-${tag}` })
  await using _sub = sub
  expect((connack as IConnackPacket).reasonCode).toBe(0)
  sub.send(b.subscribe(1, [{ topic: `alive/${tag}`, qos: 1 }], { version: 5 }))
  await sub.nextOf('suback')
  const { client: pub } = await RawClient.open(port, { version: 5, clientId: `pub-${tag}` })
  await using _pub = pub
  pub.send(b.publish({ topic: `alive/${tag}`, payload: 'still serving', qos: 1, packetId: 1, version: 5 }))
  await pub.nextOf('puback')
  const p = (await sub.nextOf('publish')) as IPublishPacket
  expect(p.payload.toString()).toBe('still serving')
}

/** Garbage that is not an SQLite database (deterministic bytes, no SQLite header). */
function garbage(): Buffer {
  const g = Buffer.alloc(16384)
  let x = 0x12345678
  for (let i = 0; i < g.length; i++) { x = (x * 1103515245 + 12345) >>> 0; g[i] = x >>> 24 }
  return g
}

/** A database claiming schema version 99, in WAL mode as every vmqtt writes it. */
function newerDb(dir: string): string {
  const path = join(dir, 'vmqtt.db')
  const db = new Database(path, { create: true })
  db.run('PRAGMA journal_mode = WAL')
  db.run('CREATE TABLE future (x)')
  db.run('PRAGMA user_version = 99')
  db.close()
  return path
}

describe.concurrent('data directory, in process', () => {
  test('a missing data directory (nested) is created, with vmqtt.db in it', async () => {
    using tmp = tempDir()
    const dir = join(tmp.path, 'a', 'b', 'data')
    const broker = createBroker(config(dir))
    await broker.start()
    try {
      expect(statSync(dir).isDirectory()).toBe(true)
      expect(existsSync(join(dir, 'vmqtt.db'))).toBe(true)
      await roundTrip(broker.port, 'created')
    } finally {
      await broker.close()
    }
  })

  test('a data directory path that is a regular file: StoreError naming the path and what to do; the file is untouched', async () => {
    using tmp = tempDir()
    const file = join(tmp.path, 'not-a-dir')
    writeFileSync(file, 'user data')
    const e = await startFails(file)
    expect(e.code).toBe('data-dir')
    expect(e.message).toContain(file)
    expect(e.message).toContain('not a directory')
    expect(e.message).toContain('VMQTT_DATA_DIR')
    expect(readFileSync(file, 'utf8')).toBe('user data')
  })

  test('a corrupt vmqtt.db (random bytes): "corrupt" StoreError, and the file is neither deleted nor modified', async () => {
    using tmp = tempDir()
    const path = join(tmp.path, 'vmqtt.db')
    const bytes = garbage()
    writeFileSync(path, bytes)
    const e = await startFails(tmp.path)
    expect(e.code).toBe('corrupt')
    expect(e.message).toContain(path)
    expect(e.message).toContain('corrupt')
    expect(e.message).toContain('move it aside')
    expect(readFileSync(path).equals(bytes)).toBe(true)
  })

  test('a database locked by another running vmqtt: "locked" StoreError, and the first broker keeps serving', async () => {
    using tmp = tempDir()
    const first = createBroker(config(tmp.path))
    await first.start()
    try {
      const e = await startFails(tmp.path)
      expect(e.code).toBe('locked')
      expect(e.message).toContain(join(tmp.path, 'vmqtt.db'))
      expect(e.message).toContain('locked by another running vmqtt')
      expect(e.message).toContain('VMQTT_DATA_DIR')
      await roundTrip(first.port, 'first')
    } finally {
      await first.close()
    }
  })

  test('a database with user_version 99: "newer" schema StoreError, the file unchanged', async () => {
    using tmp = tempDir()
    const path = newerDb(tmp.path)
    const bytes = readFileSync(path)
    const e = await startFails(tmp.path)
    expect(e.code).toBe('schema')
    expect(e.message).toContain(path)
    expect(e.message).toContain('schema version 99, newer than this vmqtt supports')
    expect(readFileSync(path).equals(bytes)).toBe(true)
  })
})

describe.concurrent('data directory, through the CLI (bun src/main.ts)', () => {
  test('a missing data directory is created and the broker starts', async () => {
    using tmp = tempDir()
    const dir = join(tmp.path, 'x', 'data')
    await using cli = new Cli(dir)
    const port = await cli.listening()
    expect(statSync(dir).isDirectory()).toBe(true)
    expect(existsSync(join(dir, 'vmqtt.db'))).toBe(true)
    await roundTrip(port, 'cli-created')
    cli.proc.kill('SIGTERM')
    expect((await cli.result()).code).toBe(0)
  })

  test('a data directory path that is a regular file: exit code 1 and a clear error line', async () => {
    using tmp = tempDir()
    const file = join(tmp.path, 'not-a-dir')
    writeFileSync(file, 'user data')
    const line = await cliFails(file)
    expect(line).toContain(file)
    expect(line).toContain('not a directory')
    expect(readFileSync(file, 'utf8')).toBe('user data')
  })

  test('a corrupt vmqtt.db: exit code 1, a "corrupt" error line, the file not deleted or modified (also with log level silent)', async () => {
    using tmp = tempDir()
    const path = join(tmp.path, 'vmqtt.db')
    const bytes = garbage()
    writeFileSync(path, bytes)
    for (const env of [{}, { VMQTT_LOG_LEVEL: 'silent' }] as Record<string, string>[]) {
      const line = await cliFails(tmp.path, env)
      expect(line).toContain(path)
      expect(line).toContain('corrupt')
      expect(readFileSync(path).equals(bytes)).toBe(true)
    }
  })

  test('a database locked by another running vmqtt: the second exits 1 with a "locked" error line, the first keeps serving', async () => {
    using tmp = tempDir()
    await using first = new Cli(tmp.path)
    const port = await first.listening()
    const line = await cliFails(tmp.path)
    expect(line).toContain(join(tmp.path, 'vmqtt.db'))
    expect(line).toContain('locked')
    expect(first.proc.exitCode).toBeNull()
    await roundTrip(port, 'cli-first')
    first.proc.kill('SIGTERM')
    expect((await first.result()).code).toBe(0)
  })

  test('a database with user_version 99: exit code 1 and a "newer" schema error line', async () => {
    using tmp = tempDir()
    const path = newerDb(tmp.path)
    const bytes = readFileSync(path)
    const line = await cliFails(tmp.path)
    expect(line).toContain(path)
    expect(line).toContain('newer than this vmqtt supports')
    expect(readFileSync(path).equals(bytes)).toBe(true)
  })
})

/**
 * Broker launchers: vmqtt from source and as the compiled binary, Mosquitto 2 and Aedes, each a
 * child process on its own port (optionally pinned to one core), started and stopped here.
 */
import type { Subprocess } from 'bun'
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, pinned, removeDir, ROOT, stopChild, tempDir, track, waitForPort, watchLines } from './proc.ts'

export interface BrokerProc {
  name: string
  port: number
  /** The broker's own pid (taskset execs the command, so this is the broker, not taskset). */
  pid: number
  dir: string
  child: Subprocess
  spawnedAt: number
  listeningAt: number
  log: string[]
  stop(): Promise<void>
}

export interface StartOptions {
  /** Durable store: vmqtt SQLite (fsync), Mosquitto `persistence true`; Aedes has only memory. */
  durable?: boolean
  /** Core to pin the broker to, or null. */
  core?: number | null
  /** Extra VMQTT_* settings (vmqtt only). */
  env?: Record<string, string>
  /** Data directory to use (kept); default a fresh temp dir removed on stop. */
  dir?: string
  /** ACL rules (vmqtt only): written to the data directory and loaded (VMQTT_ACL_FILE). */
  acl?: string
  /** Another checkout to run vmqtt from (its src/main.ts), for A/B runs of two versions. */
  root?: string
}

/**
 * The rules of the `vmqtt-acl` variant: a deny rule, %u and %c rules, and an allow for the bench
 * topics, so a subscriber on `#` is granted and every message it gets passes a read check
 * (the same-run A/B against `vmqtt`, issue 13: within 10% on fan-out).
 */
export const BENCH_ACL = [
  'default deny',
  'deny  all  all        secret/#',
  'allow all  all        users/%u/#',
  'allow all  all        clients/%c/#',
  'allow all  subscribe  $SYS/#',
  'allow all  all        bench/#',
  '',
].join('\n')

const LISTENING = (l: string) => l.includes('"mqtt listening"')
const portOf = (line: string) => Number(/"port":(\d+)/.exec(line)![1])

function finish(name: string, child: Subprocess, port: number, dir: string, keepDir: boolean, spawnedAt: number, log: string[]): BrokerProc {
  return {
    name, port, pid: child.pid, dir, child, spawnedAt, listeningAt: performance.now(), log,
    stop: async () => { await stopChild(child); if (!keepDir) removeDir(dir) },
  }
}

export const VMQTT_BIN = join(ROOT, 'dist', 'vmqtt')

/** vmqtt from source (`bun src/main.ts`) or the compiled binary, on a free port, no admin, no $SYS. */
export async function startVmqtt(name: string, binary: boolean, o: StartOptions = {}): Promise<BrokerProc> {
  const dir = o.dir ?? tempDir('vmqtt-bench-')
  const store = o.durable ? { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DURABILITY: 'fsync' } : { VMQTT_DATA_STORE: 'memory' }
  // BENCH_WRAP="bun wrap.ts" runs vmqtt from source through a script that gets the bun path and
  // src/main.ts as arguments (for investigations, e.g. to time store commits)
  const wrap = !binary && process.env.BENCH_WRAP ? process.env.BENCH_WRAP.split(' ') : []
  const cmd = binary ? [VMQTT_BIN] : [...wrap, process.execPath, join(o.root ?? ROOT, 'src', 'main.ts')]
  const acl: Record<string, string> = {}
  if (o.acl !== undefined) {
    acl.VMQTT_ACL_FILE = join(dir, 'acl.conf')
    writeFileSync(acl.VMQTT_ACL_FILE, o.acl)
  }
  const spawnedAt = performance.now()
  const child = track(Bun.spawn(pinned(cmd, o.core ?? null), {
    env: {
      ...process.env, VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off',
      VMQTT_SYS_INTERVAL: '0', VMQTT_LOG_LEVEL: 'info', VMQTT_DATA_DIR: dir, ...store, ...acl, ...o.env,
    },
    stdin: 'ignore', stdout: 'pipe', stderr: 'inherit',
  }))
  const log: string[] = []
  const line = await watchLines(child.stdout, log, LISTENING)
  return finish(name, child, portOf(line), dir, o.dir !== undefined, spawnedAt, log)
}

export function mosquittoVersion(): string | null {
  if (Bun.which('mosquitto') === null) return null
  const r = Bun.spawnSync(['mosquitto', '-h'])
  return /mosquitto version (\S+)/.exec(r.stdout.toString())?.[1] ?? '?'
}

/** Seconds between Mosquitto's snapshots when persistent (its default is 1800). */
export const MOSQUITTO_AUTOSAVE_INTERVAL = 1

/**
 * The Mosquitto settings that differ from its defaults, so it is not throttled compared to
 * vmqtt: the same windows as vmqtt's defaults (limits.maxInflight 100 instead of Mosquitto's
 * 20, limits.maxQueuedMessages 1000, Mosquitto's default too). Logging only errors and
 * warnings (vmqtt logs connections at debug level, not at its default info level).
 */
export function mosquittoConfig(port: number, dir: string, durable: boolean): string {
  return [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    // as root, mosquitto would drop to the user "mosquitto", who cannot write our temp dir
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    'max_inflight_messages 100',
    'max_queued_messages 1000',
    ...(durable
      ? ['persistence true', `persistence_location ${dir}/`, `autosave_interval ${MOSQUITTO_AUTOSAVE_INTERVAL}`, 'autosave_on_changes false']
      : ['persistence false']),
    'log_dest stderr',
    'log_type error', 'log_type warning',
    '',
  ].join('\n')
}

/** Keeps the last lines of a stream (errors and warnings), so the pipe never fills. */
async function collect(stream: ReadableStream<Uint8Array>, log: string[]): Promise<void> {
  const dec = new TextDecoder()
  try {
    for await (const chunk of stream) {
      log.push(...dec.decode(chunk, { stream: true }).split('\n').filter((l) => l !== ''))
      if (log.length > 1000) log.splice(0, log.length - 1000)
    }
  } catch { /* closed */ }
}

export async function startMosquitto(o: StartOptions = {}): Promise<BrokerProc> {
  const dir = o.dir ?? tempDir('mosq-bench-')
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(conf, mosquittoConfig(port, dir, o.durable ?? false))
  const spawnedAt = performance.now()
  const child = track(Bun.spawn(pinned(['mosquitto', '-c', conf], o.core ?? null), { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' }))
  const log: string[] = []
  void collect(child.stderr, log)
  await waitForPort(port, child)
  return finish('mosquitto', child, port, dir, o.dir !== undefined, spawnedAt, log)
}

export function aedesVersion(): string | null {
  const pkg = join(ROOT, 'node_modules', 'aedes', 'package.json')
  if (!existsSync(pkg) || Bun.which('node') === null) return null
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version
}

/** Aedes (npm), in memory (its default aedes-persistence), on Node.js. */
export async function startAedes(o: StartOptions = {}): Promise<BrokerProc> {
  const dir = tempDir('aedes-bench-')
  const spawnedAt = performance.now()
  const child = track(Bun.spawn(pinned(['node', join(import.meta.dir, 'aedes-server.mjs'), '0'], o.core ?? null), {
    stdin: 'ignore', stdout: 'pipe', stderr: 'inherit',
  }))
  const log: string[] = []
  const line = await watchLines(child.stdout, log, LISTENING)
  return finish('aedes', child, portOf(line), dir, false, spawnedAt, log)
}

export interface BrokerDef {
  id: string
  label: string
  /** MQTT versions it speaks (Aedes has no MQTT 5). */
  versions: (4 | 5)[]
  /** Why it cannot run here, or null. */
  missing: string | null
  start(o: StartOptions): Promise<BrokerProc>
}

/**
 * `vmqtt@NAME=VALUE+NAME2=VALUE2`: vmqtt from source with these environment variables added
 * (e.g. allocator settings such as MIMALLOC_PURGE_DELAY), for same-run A/B comparisons;
 * `ROOT=/path` runs src/main.ts of another checkout (e.g. the commit before a change).
 */
export function variantDef(id: string): BrokerDef | null {
  const m = /^vmqtt@(.+)$/.exec(id)
  if (m === null) return null
  const env: Record<string, string> = {}
  for (const kv of m[1]!.split('+')) {
    const eq = kv.indexOf('=')
    if (eq <= 0) throw new Error(`broker ${id}: expected vmqtt@NAME=VALUE[+NAME=VALUE...]`)
    env[kv.slice(0, eq)] = kv.slice(eq + 1)
  }
  const { ROOT: root, ...vars } = env
  return { id, label: id, versions: [4, 5], missing: null, start: (o) => startVmqtt(id, false, { ...o, env: { ...o.env, ...vars }, ...(root !== undefined ? { root } : {}) }) }
}

export function brokerDefs(wanted: readonly string[] = []): BrokerDef[] {
  const mv = mosquittoVersion()
  const av = aedesVersion()
  const variants = wanted.map(variantDef).filter((d) => d !== null)
  return [
    ...variants,
    { id: 'vmqtt', label: 'vmqtt', versions: [4, 5], missing: null, start: (o) => startVmqtt('vmqtt', false, o) },
    { id: 'vmqtt-acl', label: 'vmqtt + ACL', versions: [4, 5], missing: null, start: (o) => startVmqtt('vmqtt-acl', false, { ...o, acl: BENCH_ACL }) },
    {
      id: 'vmqtt-bin', label: 'vmqtt bin', versions: [4, 5],
      missing: existsSync(VMQTT_BIN) ? null : 'dist/vmqtt missing and could not be built',
      start: (o) => startVmqtt('vmqtt-bin', true, o),
    },
    {
      id: 'mosquitto', label: `mosquitto ${mv ?? ''}`.trim(), versions: [4, 5],
      missing: mv === null ? '`mosquitto` not found on PATH (Debian: apt-get install mosquitto)' : null,
      start: (o) => startMosquitto(o),
    },
    {
      id: 'aedes', label: `aedes ${av ?? ''}`.trim(), versions: [4],
      missing: av === null ? 'node_modules/aedes or `node` missing (npm install)' : null,
      start: (o) => startAedes(o),
    },
  ]
}

/** Newest modification time of a file under dir (recursively). */
function newestMtime(dir: string): number {
  let t = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs)
  }
  return t
}

/** Builds dist/vmqtt with scripts/build.ts when it is missing, older than src/, or when asked to. */
export function ensureBinary(rebuild: boolean): string | null {
  if (existsSync(VMQTT_BIN) && !rebuild && statSync(VMQTT_BIN).mtimeMs >= newestMtime(join(ROOT, 'src'))) return null
  console.log('building dist/vmqtt (bun scripts/build.ts) ...')
  const r = Bun.spawnSync([process.execPath, join(ROOT, 'scripts', 'build.ts')], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
  return r.exitCode === 0 ? null : `build failed: ${r.stderr.toString().slice(-500)}`
}

/**
 * Fuzz inputs and runner shared by the malformed-packet tests, the fuzz test and scripts/fuzz.ts.
 * Inputs are random bytes or valid packets from the independent builder (v3.1, v3.1.1, v5),
 * mutated: bit flips, truncation, corrupted length fields, garbage property ids, duplicated
 * packets, inserted random bytes. Everything derives from a seeded PRNG, so a case replays from
 * (seed, case number). The broker runs as a child process (`bun src/main.ts`): a crash is its
 * exit, and its memory is its own RSS, apart from the fuzzer's.
 */
import { connect as netConnect, createServer } from 'node:net'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { readLogLines } from './log-lines.ts'
import * as b from './packet-builder.ts'
import { prng } from './prng.ts'

export type FuzzVersion = 3 | 4 | 5
type Rnd = () => number

const int = (rnd: Rnd, n: number) => Math.floor(rnd() * n)
const bytes = (rnd: Rnd, n: number) => Array.from({ length: n }, () => int(rnd, 256))
const pick = <T>(rnd: Rnd, xs: readonly T[]): T => xs[int(rnd, xs.length)]!

/** One fuzz input sent after a valid CONNECT: fully random bytes, a well-framed random packet, or a mutated valid packet. */
export function fuzzInput(rnd: Rnd, version: 4 | 5): Buffer {
  const mode = int(rnd, 3)
  if (mode === 0) return Buffer.from(bytes(rnd, 1 + int(rnd, 48)))
  if (mode === 1) return b.frame(int(rnd, 16), int(rnd, 16), bytes(rnd, int(rnd, 40)))
  const seeds: Buffer[] = [
    b.publish({ topic: 'fz/a', payload: 'p', qos: int(rnd, 3), packetId: 1 + int(rnd, 5), retain: rnd() < 0.3, version, properties: version === 5 ? { messageExpiry: 5, contentType: 'c', userProperties: [['k', 'v']] } : undefined }),
    b.subscribe(1 + int(rnd, 9), [{ topic: 'fz/+', qos: int(rnd, 3) }, 'fz/#'], { version, properties: version === 5 ? { subscriptionIdentifier: 1 + int(rnd, 9) } : undefined }),
    b.unsubscribe(1 + int(rnd, 9), ['fz/+', 'fz/#'], { version }),
    b.puback(1 + int(rnd, 5), { version, reason: version === 5 ? 0 : undefined }),
    b.pubrec(1 + int(rnd, 5), { version }),
    b.pubrel(1 + int(rnd, 5), { version }),
    b.pubcomp(1 + int(rnd, 5), { version }),
    b.pingreq(),
    b.disconnect({ version, reason: version === 5 ? 0 : undefined, properties: version === 5 ? { sessionExpiry: 0 } : undefined }),
  ]
  const out = [...seeds[int(rnd, seeds.length)]!]
  const edits = 1 + int(rnd, 4)
  for (let i = 0; i < edits; i++) {
    const what = int(rnd, 4)
    if (what === 0 && out.length > 0) out[int(rnd, out.length)] = int(rnd, 256) // flip a byte
    else if (what === 1 && out.length > 1) out.length = 1 + int(rnd, out.length - 1) // truncate
    else if (what === 2) out.splice(int(rnd, out.length + 1), 0, ...bytes(rnd, 1 + int(rnd, 6))) // insert
    else if (out.length > 0) out[int(rnd, Math.min(out.length, 2))] ^= 1 << int(rnd, 8) // header bit flip
  }
  return Buffer.from(out)
}

const TOPICS = ['fz/a', 'fz/b/c', '$SYS/x', 'fz/€', 'a'.repeat(70), '', '/', 'fz//x']
const FILTERS = ['fz/#', 'fz/+/c', '#', '+', '$share/g/fz/#', '$share/g/', 'fz/#/x', 'fz/a+', '$SYS/#']
/** Property ids: every valid one and some that are not. */
const PROPERTY_IDS = [0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1c, 0x1f, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x00, 0x04, 0x7f, 0x80, 0xff]

function maybe<T>(rnd: Rnd, p: number, x: () => T): T | undefined {
  return rnd() < p ? x() : undefined
}

/** A valid CONNECT of the given version, with a random will, credentials and (v5) properties. */
export function connectSeed(rnd: Rnd, version: FuzzVersion): Buffer {
  const v5 = version === 5
  return b.connect({
    version,
    clientId: pick(rnd, ['', 'fz-1', 'fz-2', 'fz-3', 'fz-4']),
    clean: rnd() < 0.8,
    keepalive: pick(rnd, [0, 1, 60, 65535]),
    username: maybe(rnd, 0.2, () => pick(rnd, ['u', '', 'üser'])),
    password: maybe(rnd, 0.15, () => Buffer.from(bytes(rnd, int(rnd, 8)))),
    will: maybe(rnd, 0.3, () => ({
      topic: pick(rnd, TOPICS), payload: 'will', qos: int(rnd, 3), retain: rnd() < 0.3,
      properties: v5 ? { willDelay: int(rnd, 3), messageExpiry: 1 + int(rnd, 5), contentType: 't', payloadFormat: int(rnd, 2) } : undefined,
    })),
    properties: v5 ? {
      sessionExpiry: pick(rnd, [0, 0, 5, 0xffffffff]),
      receiveMaximum: pick(rnd, [1, 10, 65535]),
      maximumPacketSize: pick(rnd, [64, 1024, 268435455]),
      topicAliasMaximum: int(rnd, 5),
      requestProblemInfo: int(rnd, 2),
      requestResponseInfo: int(rnd, 2),
      userProperties: [['k', 'v']],
      ...(rnd() < 0.15 ? { authMethod: pick(rnd, ['SCRAM-SHA-256', 'nope']), authData: Buffer.from(bytes(rnd, int(rnd, 12))) } : {}),
    } : undefined,
  })
}

/** A valid packet a client may send after CONNECT (or one a client must not send, now and then). */
export function packetSeed(rnd: Rnd, version: FuzzVersion): Buffer {
  const v5 = version === 5
  const id = 1 + int(rnd, 8)
  switch (int(rnd, 12)) {
    case 0: case 1: case 2: {
      const qos = int(rnd, 3)
      return b.publish({
        topic: pick(rnd, TOPICS), payload: Buffer.from(bytes(rnd, int(rnd, 40))), qos, packetId: id, retain: rnd() < 0.2, dup: qos > 0 && rnd() < 0.2, version,
        properties: v5 ? {
          ...(rnd() < 0.3 ? { topicAlias: 1 + int(rnd, 4) } : {}),
          ...(rnd() < 0.3 ? { messageExpiry: int(rnd, 5) } : {}),
          ...(rnd() < 0.3 ? { payloadFormat: int(rnd, 2) } : {}),
          ...(rnd() < 0.2 ? { responseTopic: 'fz/r', correlationData: 'c' } : {}),
          ...(rnd() < 0.2 ? { contentType: 'text/plain', userProperties: [['a', 'b'], ['a', 'c']] as [string, string][] } : {}),
        } : undefined,
      })
    }
    case 3: return b.subscribe(id, [{ topic: pick(rnd, FILTERS), qos: int(rnd, 3), nl: rnd() < 0.3, rap: rnd() < 0.3, rh: int(rnd, 3) }, pick(rnd, FILTERS)], {
      version, properties: v5 && rnd() < 0.5 ? { subscriptionIdentifier: 1 + int(rnd, 100), userProperties: [['s', 't']] } : undefined,
    })
    case 4: return b.unsubscribe(id, [pick(rnd, FILTERS), pick(rnd, FILTERS)], { version, properties: v5 && rnd() < 0.3 ? { userProperties: [['u', 'v']] } : undefined })
    case 5: return b.puback(id, { version, reason: v5 ? pick(rnd, [0, 0x10, 0x80]) : undefined, properties: v5 && rnd() < 0.3 ? { reasonString: 'r' } : undefined })
    case 6: return b.pubrec(id, { version, reason: v5 ? pick(rnd, [0, 0x80]) : undefined })
    case 7: return b.pubrel(id, { version, reason: v5 ? pick(rnd, [0, 0x92]) : undefined })
    case 8: return b.pubcomp(id, { version, reason: v5 ? pick(rnd, [0, 0x92]) : undefined })
    case 9: return b.pingreq()
    case 10: return b.disconnect({ version, reason: v5 ? pick(rnd, [0, 4, 0x80]) : undefined, properties: v5 && rnd() < 0.5 ? { sessionExpiry: int(rnd, 3), reasonString: 'bye' } : undefined })
    default: return v5 ? b.auth({ reason: pick(rnd, [0, 0x18, 0x19]), properties: { authMethod: 'SCRAM-SHA-256', authData: Buffer.from(bytes(rnd, 8)) } }) : b.pingreq()
  }
}

/** Index just past the fixed header (type byte + remaining length), or 1 when it is malformed. */
function bodyStart(p: number[]): number {
  for (let i = 1; i < Math.min(p.length, 5); i++) if ((p[i]! & 0x80) === 0) return i + 1
  return 1
}

/** Applies 1-4 random mutations to a packet. */
export function mutate(rnd: Rnd, packet: Uint8Array): Buffer {
  let out = [...packet]
  const edits = 1 + int(rnd, 4)
  for (let e = 0; e < edits; e++) {
    switch (int(rnd, 8)) {
      case 0: if (out.length > 0) out[int(rnd, out.length)] ^= 1 << int(rnd, 8); break // bit flip
      case 1: if (out.length > 1) out.length = 1 + int(rnd, out.length - 1); break // truncation
      case 2: { // remaining length corrupted: random value, overlong or over-long encoding
        const start = bodyStart(out)
        const len = pick(rnd, [0, 1, out.length, out.length + 1 + int(rnd, 100), 127, 128, 16383, 16384, 2097151, 268435455, int(rnd, 1 << 20)])
        const lenBytes = rnd() < 0.2 ? [0x80, 0x80, 0x80, 0x80, 0x01] : rnd() < 0.2 ? [0x80 | (len & 0x7f), 0x00] : b.varint(Math.min(len, 268435455))
        out = [out[0] ?? 0x30, ...lenBytes, ...out.slice(start)]
        break
      }
      case 3: { // property id garbage inside the body
        const at = bodyStart(out) + int(rnd, Math.max(out.length - bodyStart(out), 1))
        out.splice(at, 0, pick(rnd, PROPERTY_IDS), ...bytes(rnd, int(rnd, 5)))
        break
      }
      case 4: out = [...out, ...out]; break // the packet twice
      case 5: out.splice(int(rnd, out.length + 1), 0, ...bytes(rnd, 1 + int(rnd, 8))); break // random bytes inserted
      case 6: if (out.length > 0) out[0] = (int(rnd, 16) << 4) | int(rnd, 16); break // other type / flags
      default: if (out.length > 2) out[2 + int(rnd, out.length - 2)] = pick(rnd, [0x00, 0xff, 0x7f, 0x80, 0xc0, 0xed]) // boundary byte
    }
  }
  return Buffer.from(out)
}

export interface FuzzCase {
  version: FuzzVersion
  /** Writes, in order (a packet may be split across writes). */
  chunks: Buffer[]
}

/** Case `n` of the run with `seed`: what a fresh connection sends. */
export function fuzzCase(seed: number, n: number): FuzzCase {
  const rnd = prng((seed ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0)
  const version = pick(rnd, [3, 4, 5, 5] as const)
  const parts: Buffer[] = []
  const mode = rnd()
  if (mode < 0.1) {
    parts.push(Buffer.from(bytes(rnd, 1 + int(rnd, 64)))) // noise, no CONNECT at all
  } else if (mode < 0.3) {
    parts.push(mutate(rnd, connectSeed(rnd, version))) // a broken CONNECT, maybe more after it
    if (rnd() < 0.5) parts.push(packetSeed(rnd, version))
  } else {
    parts.push(connectSeed(rnd, version))
    const n = 1 + int(rnd, 5)
    for (let i = 0; i < n; i++) {
      const p = packetSeed(rnd, version)
      parts.push(rnd() < 0.3 ? p : mutate(rnd, p))
    }
  }
  const all = Buffer.concat(parts)
  // one write, or split at random points so that packets arrive in pieces
  const chunks: Buffer[] = []
  const cuts = rnd() < 0.5 ? 0 : 1 + int(rnd, 3)
  const at = Array.from({ length: cuts }, () => int(rnd, all.length + 1)).sort((x, y) => x - y)
  let from = 0
  for (const c of at) { chunks.push(all.subarray(from, c)); from = c }
  chunks.push(all.subarray(from))
  return { version, chunks: chunks.filter((c) => c.length > 0) }
}

/**
 * Broker settings for fuzz runs: errors only in the log, and sessions that expire within 5 s
 * (v5 clients ask for up to 0xFFFFFFFF, mutated v3 client ids with clean session 0 would never
 * expire), so the state fuzz clients legitimately create stays bounded and RSS growth shows leaks.
 */
export const FUZZ_ENV: Record<string, string> = { VMQTT_LOG_LEVEL: 'error', VMQTT_LIMITS_MAX_SESSION_EXPIRY: '5', VMQTT_SESSION_V3_EXPIRY: '5' }

export type CaseOutcome = 'closed' | 'timeout' | 'unreachable'

/**
 * Sends one case on a fresh connection, then FIN; resolves when the broker has closed the
 * connection ('closed'), after timeoutMs ('timeout'; the socket is destroyed), or 'unreachable'
 * when the connection could not be made (the broker is gone).
 */
export function sendCase(port: number, c: FuzzCase, timeoutMs = 5000): Promise<CaseOutcome> {
  return new Promise((done) => {
    const s = netConnect({ port, host: '127.0.0.1' })
    let connected = false
    const timer = setTimeout(() => { s.destroy(); done('timeout') }, timeoutMs)
    s.on('error', () => {})
    s.on('data', () => {})
    s.on('close', () => { clearTimeout(timer); done(connected ? 'closed' : 'unreachable') })
    s.on('connect', () => {
      connected = true
      for (const chunk of c.chunks) s.write(chunk)
      s.end()
    })
  })
}

export interface FuzzResult {
  cases: number
  timeouts: number
  unreachable: number
  ms: number
}

/** Runs cases [0, cases) of `seed`, `concurrency` connections at a time. */
export async function runFuzz(port: number, o: { seed: number; cases: number; concurrency?: number; first?: number; onProgress?: (done: number) => void }): Promise<FuzzResult> {
  const started = performance.now()
  const first = o.first ?? 0
  let next = first
  let done = 0
  const r: FuzzResult = { cases: 0, timeouts: 0, unreachable: 0, ms: 0 }
  const worker = async () => {
    while (next < first + o.cases) {
      const n = next++
      const out = await sendCase(port, fuzzCase(o.seed, n))
      if (out === 'timeout') r.timeouts++
      if (out === 'unreachable') r.unreachable++
      r.cases++
      if (++done % 1000 === 0) o.onProgress?.(done)
      if (r.unreachable > 10) return
    }
  }
  await Promise.all(Array.from({ length: o.concurrency ?? 32 }, worker))
  r.ms = performance.now() - started
  return r
}

const ROOT = resolve(import.meta.dir, '../..')

/** The broker as a child process (`bun src/main.ts`), its JSON log lines collected. */
export class BrokerProcess implements AsyncDisposable {
  readonly proc: Subprocess<'ignore', 'pipe', 'pipe'>
  readonly lines: Record<string, unknown>[] = []
  private constructor(env: Record<string, string>) {
    const base: Record<string, string> = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VMQTT_') && v !== undefined) base[k] = v
    this.proc = Bun.spawn([process.execPath, 'src/main.ts'], {
      cwd: ROOT,
      env: { ...base, VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off', VMQTT_SYS_INTERVAL: '0', VMQTT_DATA_STORE: 'memory', ...env },
      stdin: 'ignore', stdout: 'pipe', stderr: 'pipe',
    })
    void readLogLines(this.proc.stdout, this.lines, () => {})
  }

  /**
   * Starts the broker on a free port (its info lines are not logged: the fuzz run logs errors
   * only) and resolves once it accepts a TCP connection.
   */
  static async start(env: Record<string, string> = {}, ms = 10_000): Promise<{ broker: BrokerProcess; port: number }> {
    const port = await freePort()
    const broker = new BrokerProcess({ VMQTT_MQTT_PORT: String(port), ...env })
    const deadline = Date.now() + ms
    for (;;) {
      if (!broker.alive) throw new Error(`vmqtt exited before listening: ${await new Response(broker.proc.stderr).text()}`)
      if (await canConnect(port)) return { broker, port }
      if (Date.now() > deadline) throw new Error(`vmqtt did not listen on ${port} within ${ms}ms`)
      // waiting for another process to bind: there is no event to wait on
      await Bun.sleep(50)
    }
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** Resident set size of the broker process in bytes (VmRSS from /proc). */
  rss(): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.proc.pid}/status`, 'utf8'))
    if (m === null) throw new Error('no VmRSS in /proc status')
    return Number(m[1]) * 1024
  }

  /** Log lines at level error (internal errors: bugs the fuzzer found). */
  errors(): Record<string, unknown>[] {
    return this.lines.filter((l) => l.level === 'error')
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.alive) {
      this.proc.kill('SIGTERM')
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000)
      await this.proc.exited
      clearTimeout(t)
    }
  }
}

/** A TCP port nobody listens on right now. */
function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer()
    srv.once('error', fail)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => done(port))
    })
  })
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = netConnect({ port, host: '127.0.0.1' })
    s.once('connect', () => { s.destroy(); done(true) })
    s.once('error', () => done(false))
  })
}

/**
 * Kill -9 torture harness (issue 3), shared by test/integration/17-torture.test.ts and
 * scripts/torture.ts.
 *
 * The broker runs as a child process (`bun src/main.ts`) on a persistent SQLite data dir. Raw
 * MQTT clients (bytes from the independent packet-builder, decoding by mqtt-packet: nothing from
 * src/) publish at QoS 1 and 2 and subscribe with persistent sessions, in MQTT 3.1.1 and 5. In a
 * loop the broker is killed with SIGKILL at a random moment (seeded PRNG), restarted on the same
 * dir, and every client reconnects, resuming its session. Publishers record exactly which
 * messages the broker acknowledged (PUBACK for QoS 1, PUBREC for QoS 2, per packet id) and resend
 * what was not, as MQTT requires: PUBLISH with DUP=1, or PUBREL when PUBREC had arrived. After a
 * final drain, analyse() checks delivery, order and retained state. The seed makes the choices
 * (kill moments, late subscribers) reproducible; thread timing is not.
 */
import { connect as netConnect } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import mqttPacket, { type Packet } from 'mqtt-packet'
import * as pb from './packet-builder.ts'

const ROOT = resolve(import.meta.dir, '../..')
type Version = 4 | 5

export interface TortureOptions {
  cycles: number
  seed: number
  durability?: 'fsync' | 'process'
  /** 'memory' only to prove that the checks fail when nothing is durable. */
  store?: 'sqlite' | 'memory'
  /** The broker lives a uniformly random time in [minUpMs, maxUpMs] before each SIGKILL. */
  minUpMs?: number
  maxUpMs?: number
  /** Unacknowledged messages each publisher keeps in flight. */
  window?: number
  /** Chance per cycle that a subscriber reconnects late (exercises offline queues). */
  lateChance?: number
  /** The final drain fails after this long without progress (default 10 s). */
  drainTimeoutMs?: number
  /** Extra VMQTT_* variables for the broker (e.g. VMQTT_DATA_COMMIT_INTERVAL). */
  env?: Record<string, string>
  /** Data directory to use and keep (default: a temporary one, removed at the end). */
  dataDir?: string
  /** Checkout whose src/main.ts runs as the broker (default: this one). */
  root?: string
  log?: (line: string) => void
}

export interface TortureReport {
  seed: number
  cycles: number
  durability: string
  elapsedMs: number
  published: number
  acknowledged: { qos1: number; qos2: number; retained: number }
  resent: { publish: number; pubrel: number }
  /** Acknowledged data messages times subscribers: what must arrive. */
  expectedDeliveries: number
  /** Of those, how many arrived (at least once). */
  delivered: number
  duplicates: { qos1: number; qos2: number }
  losses: number
  orderViolations: number
  retainedMismatches: number
  sessionsLost: number
  /** Protocol problems seen by the clients (id reuse, QoS mismatch, unknown payloads, ack order). */
  protocolErrors: number
  /** warn/error lines the broker logged. */
  brokerComplaints: string[]
  brokerExitCode: number | null
  /** Milliseconds from spawn to listening, after each kill: mean and max. */
  restartMs: { mean: number; max: number }
  problems: string[]
  ok: boolean
}

/** mulberry32: a small seeded PRNG returning [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Wakes waiters whenever a client saw something; waits re-check their condition (no polling). */
class Signal {
  #waiters = new Set<() => void>()
  /** Notifications so far: a measure of progress. */
  count = 0
  notify(): void { this.count++; for (const w of [...this.#waiters]) w() }
  /** Like until(), but only gives up after stallMs without any notification (or maxMs in all). */
  async untilStalled(ready: () => boolean, stallMs: number, maxMs: number): Promise<boolean> {
    const end = Date.now() + maxMs
    for (;;) {
      const before = this.count
      if (await this.until(ready, Math.min(stallMs, Math.max(end - Date.now(), 1)))) return true
      if (this.count === before || Date.now() >= end) return false
    }
  }

  until(ready: () => boolean, ms: number): Promise<boolean> {
    if (ready()) return Promise.resolve(true)
    return new Promise((res) => {
      const done = (v: boolean) => { clearTimeout(timer); this.#waiters.delete(check); res(v) }
      const check = () => { if (ready()) done(true) }
      const timer = setTimeout(() => done(false), ms)
      this.#waiters.add(check)
    })
  }
}

/** The broker as a child process; resolves once it logged its MQTT port. */
class BrokerProcess {
  readonly proc: ReturnType<typeof Bun.spawn>
  port = 0
  readonly tail: string[] = []
  private constructor(proc: ReturnType<typeof Bun.spawn>) { this.proc = proc }

  static async start(root: string, env: Record<string, string>, complaints: string[], timeoutMs = 15_000): Promise<BrokerProcess> {
    const proc = Bun.spawn([process.execPath, join(root, 'src/main.ts')], {
      cwd: root, env: { ...process.env, ...env }, stdout: 'pipe', stderr: 'pipe',
    })
    const b = new BrokerProcess(proc)
    let ready: (port: number) => void = () => {}
    const listening = new Promise<number>((res) => { ready = res })
    void b.#read(proc.stdout as ReadableStream<Uint8Array>, (line) => {
      let j: { msg?: string; level?: string; port?: number } = {}
      try { j = JSON.parse(line) } catch { /* not JSON */ }
      if (j.msg === 'mqtt listening' && typeof j.port === 'number') ready(j.port)
      if (j.level === 'warn' || j.level === 'error') complaints.push(line)
    })
    void b.#read(proc.stderr as ReadableStream<Uint8Array>, (line) => { if (line.trim() !== '') complaints.push(`stderr: ${line}`) })
    let timer: ReturnType<typeof setTimeout> | undefined
    const failed = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`broker did not log its port within ${timeoutMs}ms`)), timeoutMs)
      void proc.exited.then((code) => rej(new Error(`broker exited with ${code} before listening`)))
    })
    try {
      b.port = await Promise.race([listening, failed])
    } catch (e) {
      proc.kill('SIGKILL')
      await proc.exited
      throw new Error(`${(e as Error).message}\n${b.tail.join('\n')}`)
    } finally {
      clearTimeout(timer)
    }
    return b
  }

  async #read(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
    const dec = new TextDecoder()
    let buf = ''
    for await (const chunk of stream) {
      buf += dec.decode(chunk, { stream: true })
      let i: number
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        this.tail.push(line)
        if (this.tail.length > 40) this.tail.shift()
        onLine(line)
      }
    }
  }

  async kill(): Promise<void> {
    this.proc.kill('SIGKILL')
    await this.proc.exited
  }

  /** SIGTERM and wait for a graceful exit; SIGKILL after timeoutMs. Returns the exit code. */
  async stop(timeoutMs = 5000): Promise<number | null> {
    this.proc.kill('SIGTERM')
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs)
    const code = await this.proc.exited
    clearTimeout(timer)
    return code
  }
}

interface WireHandlers {
  connack(wire: Wire, p: Packet): boolean
  packet(wire: Wire, p: Packet): void
  close(wire: Wire): void
}

/** One TCP connection: coalesced writes, mqtt-packet decoding, CONNACK handshake. */
class Wire {
  closed = false
  #socket: ReturnType<typeof netConnect>
  #out: Buffer[] = []
  #scheduled = false
  private constructor(socket: ReturnType<typeof netConnect>) { this.#socket = socket }

  /**
   * Connects and sends CONNECT. h.connack runs synchronously on the CONNACK (packets in the same
   * chunk go to h.packet after it); resolves with the wire when h.connack accepted, else null.
   */
  static open(port: number, version: Version, connect: Buffer, h: WireHandlers, timeoutMs = 3000): Promise<Wire | null> {
    return new Promise((res) => {
      const socket = netConnect({ host: '127.0.0.1', port })
      socket.setNoDelay(true)
      const wire = new Wire(socket)
      const parser = mqttPacket.parser({ protocolVersion: version })
      let settled = false
      const settle = (v: Wire | null) => { if (!settled) { settled = true; clearTimeout(timer); res(v) } }
      const timer = setTimeout(() => { socket.destroy(); settle(null) }, timeoutMs)
      parser.on('packet', (p: Packet) => {
        if (settled) { if (!wire.closed) h.packet(wire, p); return }
        if (p.cmd === 'connack' && h.connack(wire, p)) settle(wire)
        else { socket.destroy(); settle(null) }
      })
      parser.on('error', () => socket.destroy())
      socket.on('connect', () => socket.write(connect))
      socket.on('data', (b: Buffer) => parser.parse(b))
      socket.on('error', () => {})
      socket.on('close', () => {
        wire.closed = true
        if (settled) h.close(wire)
        else settle(null)
      })
    })
  }

  send(b: Buffer): void {
    if (this.closed) return
    this.#out.push(b)
    if (this.#scheduled) return
    this.#scheduled = true
    queueMicrotask(() => {
      this.#scheduled = false
      const out = this.#out
      this.#out = []
      if (!this.closed && out.length > 0) this.#socket.write(out.length === 1 ? out[0]! : Buffer.concat(out))
    })
  }

  destroy(): void { this.#socket.destroy() }

  end(last: Buffer): void {
    if (this.closed) return
    this.#socket.end(last)
  }
}

function connectBytes(version: Version, clientId: string, clean: boolean, extra: pb.Props = {}): Buffer {
  return pb.connect({ version, clientId, clean, keepalive: 0, properties: version === 5 ? { sessionExpiry: 3600, ...extra } : undefined })
}

function connackCode(p: Packet): number {
  const c = p as { returnCode?: number; reasonCode?: number }
  return c.reasonCode ?? c.returnCode ?? 0
}

interface Outgoing { seq: number; topic: string; retain: boolean; state: 'publish' | 'pubrel' }

/** A QoS 1 or 2 publisher with a persistent session and an exact record of acknowledgements. */
export class Publisher {
  readonly id: string
  readonly version: Version
  readonly qos: 1 | 2
  readonly dataTopic: string
  readonly retainedTopic: string
  /** In flight by packet id; Map order is send order, which a resend keeps [MQTT-4.4.0-1]. */
  readonly inflight = new Map<number, Outgoing>()
  /** Sequence numbers of data messages the broker acknowledged. */
  readonly ackedData: number[] = []
  lastAckedRetained = 0
  ackedRetained = 0
  nextSeq = 1
  producing = true
  resentPublish = 0
  resentPubrel = 0
  wire: Wire | null = null
  connected = false
  #everConnected = false
  #nextId = 1
  #window: number
  #lastAckInConn = 0
  #problem: (what: string) => void
  #signal: Signal

  constructor(id: string, version: Version, qos: 1 | 2, window: number, problem: (what: string) => void, signal: Signal) {
    this.id = id; this.version = version; this.qos = qos
    this.dataTopic = `torture/d/${id}`
    this.retainedTopic = `torture/r/${id}`
    this.#window = window
    this.#problem = problem
    this.#signal = signal
  }

  async connect(port: number): Promise<boolean> {
    const wire = await Wire.open(port, this.version, connectBytes(this.version, this.id, false), {
      connack: (w, p) => this.#onConnack(w, p),
      packet: (w, p) => this.#onPacket(w, p),
      close: (w) => this.#onClose(w),
    })
    return wire !== null
  }

  #onConnack(wire: Wire, connack: Packet): boolean {
    if (connackCode(connack) !== 0) return false
    if (this.#everConnected && !(connack as { sessionPresent: boolean }).sessionPresent) {
      this.#problem(`session lost: publisher ${this.id} got session present 0`)
    }
    this.#everConnected = true
    this.wire = wire
    this.connected = true
    this.#lastAckInConn = 0
    // [MQTT-4.4.0-1] resend unacknowledged PUBLISH with DUP=1 and PUBREL, in the original order
    for (const [id, o] of this.inflight) {
      if (o.state === 'publish') { this.resentPublish++; this.#publish(id, o, true) }
      else { this.resentPubrel++; wire.send(pb.pubrel(id, { version: this.version })) }
    }
    this.pump()
    return true
  }

  /** Sends new messages while the window has room. Every 5th sequence number goes to the retained topic. */
  pump(): void {
    const wire = this.wire
    if (wire === null || !this.connected) return
    while (this.producing && this.inflight.size < this.#window) {
      const seq = this.nextSeq++
      const retain = seq % 5 === 0
      const o: Outgoing = { seq, topic: retain ? this.retainedTopic : this.dataTopic, retain, state: 'publish' }
      const id = this.#allocId()
      this.inflight.set(id, o)
      this.#publish(id, o, false)
    }
  }

  close(): void { this.wire?.end(pb.disconnect({ version: this.version })) }

  #publish(id: number, o: Outgoing, dup: boolean): void {
    this.wire!.send(pb.publish({ topic: o.topic, payload: `${this.id}:${o.seq}`, qos: this.qos, dup, retain: o.retain, packetId: id, version: this.version }))
  }

  #allocId(): number {
    for (;;) {
      const id = this.#nextId
      this.#nextId = id === 65535 ? 1 : id + 1
      if (!this.inflight.has(id)) return id
    }
  }

  #acked(o: Outgoing): void {
    // [MQTT-4.6.0-2] [MQTT-4.6.0-3] PUBACK / PUBREC come in the order the PUBLISHes were sent
    if (o.seq < this.#lastAckInConn) this.#problem(`ack order: publisher ${this.id} got the ack of ${o.seq} after ${this.#lastAckInConn}`)
    this.#lastAckInConn = o.seq
    if (o.retain) { this.ackedRetained++; if (o.seq > this.lastAckedRetained) this.lastAckedRetained = o.seq }
    else this.ackedData.push(o.seq)
  }

  #onPacket(wire: Wire, p: Packet): void {
    if (wire !== this.wire) return
    const id = (p as { messageId?: number }).messageId ?? 0
    const rc = (p as { reasonCode?: number }).reasonCode ?? 0
    const o = this.inflight.get(id)
    if (p.cmd === 'puback' || (p.cmd === 'pubrec' && o?.state === 'publish')) {
      if (o === undefined || (p.cmd === 'puback') !== (this.qos === 1)) { this.#problem(`publisher ${this.id}: unexpected ${p.cmd} ${id}`); return }
      if (rc >= 0x80) {
        // v5: the broker refused the message; the flow ends and it is not resent
        this.#problem(`publisher ${this.id}: seq ${o.seq} refused with 0x${rc.toString(16)}`)
        this.inflight.delete(id)
      } else {
        this.#acked(o)
        if (p.cmd === 'puback') this.inflight.delete(id)
        else { o.state = 'pubrel'; wire.send(pb.pubrel(id, { version: this.version })) }
      }
    } else if (p.cmd === 'pubrec') {
      // a PUBREC for a flow already in the PUBREL phase: answer again with PUBREL
      wire.send(pb.pubrel(id, { version: this.version }))
    } else if (p.cmd === 'pubcomp') {
      if (o?.state === 'pubrel') this.inflight.delete(id)
    } else if (p.cmd !== 'disconnect') {
      this.#problem(`publisher ${this.id}: unexpected ${p.cmd}`)
    }
    this.pump()
    this.#signal.notify()
  }

  #onClose(wire: Wire): void {
    if (wire !== this.wire) return
    this.connected = false
    this.wire = null
    this.#signal.notify()
  }
}

/** A persistent subscriber to every publisher's data topic, acting as a spec-conformant receiver. */
export class Subscriber {
  readonly id: string
  readonly version: Version
  /** Per publisher id: sequence numbers in arrival order (duplicates included). */
  readonly arrivals = new Map<string, number[]>()
  readonly seen = new Map<string, Set<number>>()
  /** QoS 2 packet ids received and awaiting PUBREL, with the message each one carried. */
  readonly awaiting = new Map<number, string>()
  /** During the drain: `${pub}:${seq}` still to arrive. */
  missing: Set<string> | null = null
  wire: Wire | null = null
  connected = false
  #everConnected = false
  #qosOf: Map<string, number>
  #problem: (what: string) => void
  #signal: Signal

  readonly #receiveMaximum: number

  constructor(id: string, version: Version, receiveMaximum: number, qosOf: Map<string, number>, problem: (what: string) => void, signal: Signal) {
    this.id = id; this.version = version
    this.#receiveMaximum = receiveMaximum
    this.#qosOf = qosOf
    this.#problem = problem
    this.#signal = signal
  }

  async connect(port: number): Promise<boolean> {
    const first = !this.#everConnected
    const wire = await Wire.open(port, this.version, connectBytes(this.version, this.id, false, { receiveMaximum: this.#receiveMaximum }), {
      connack: (w, p) => this.#onConnack(w, p),
      packet: (w, p) => this.#onPacket(w, p),
      close: (w) => this.#onClose(w),
    })
    if (wire === null) return false
    if (first) {
      wire.send(pb.subscribe(1, [{ topic: 'torture/d/+', qos: 2 }], { version: this.version }))
      const ok = await this.#signal.until(() => this.#subacked || wire.closed, 5000)
      if (!ok || !this.#subacked) { wire.destroy(); return false }
      this.#everConnected = true
    }
    return true
  }

  #onConnack(wire: Wire, connack: Packet): boolean {
    if (connackCode(connack) !== 0) return false
    if (this.#everConnected && !(connack as { sessionPresent: boolean }).sessionPresent) {
      this.#problem(`session lost: subscriber ${this.id} got session present 0`)
    }
    this.wire = wire
    this.connected = true
    return true
  }

  #subacked = false

  close(): void { this.wire?.end(pb.disconnect({ version: this.version })) }

  #onPacket(wire: Wire, p: Packet): void {
    if (wire !== this.wire) return
    const v = { version: this.version }
    if (p.cmd === 'suback') {
      if (p.granted[0] !== 2) this.#problem(`subscriber ${this.id}: SUBACK ${String(p.granted)}`)
      else this.#subacked = true
    } else if (p.cmd === 'publish') {
      const text = Buffer.from(p.payload).toString()
      const id = p.messageId ?? 0
      if (p.qos === 2) {
        const held = this.awaiting.get(id)
        if (held === undefined) { this.#record(p.topic, text, p.qos); this.awaiting.set(id, text) }
        // [MQTT-4.3.3-9] not delivered again before PUBREL; another message under a held id is lost to a conformant receiver
        else if (held !== text) this.#problem(`subscriber ${this.id}: packet id ${id} reused for ${text} while ${held} awaits PUBREL${p.dup ? '' : ' (DUP=0)'}`)
        wire.send(pb.pubrec(id, v))
      } else {
        this.#record(p.topic, text, p.qos)
        if (p.qos === 1) wire.send(pb.puback(id, v))
      }
    } else if (p.cmd === 'pubrel') {
      this.awaiting.delete(p.messageId ?? 0)
      wire.send(pb.pubcomp(p.messageId ?? 0, v))
    } else if (p.cmd !== 'disconnect') {
      this.#problem(`subscriber ${this.id}: unexpected ${p.cmd}`)
    }
    this.#signal.notify()
  }

  #record(topic: string, text: string, qos: number): void {
    const [pub, s] = text.split(':')
    const seq = Number(s)
    const want = this.#qosOf.get(pub ?? '')
    if (want === undefined || topic !== `torture/d/${pub}` || !Number.isInteger(seq)) {
      this.#problem(`subscriber ${this.id}: unknown message ${text} on ${topic}`)
      return
    }
    if (qos !== want) this.#problem(`subscriber ${this.id}: ${text} arrived at QoS ${qos}, published at ${want}`)
    let list = this.arrivals.get(pub!)
    if (list === undefined) { this.arrivals.set(pub!, (list = [])); this.seen.set(pub!, new Set()) }
    list.push(seq)
    this.seen.get(pub!)!.add(seq)
    this.missing?.delete(text)
  }

  #onClose(wire: Wire): void {
    if (wire !== this.wire) return
    this.connected = false
    this.wire = null
    this.#signal.notify()
  }
}

/** The last retained message per publisher, read by a fresh clean client. */
async function readRetained(port: number, count: number, signal: Signal, timeoutMs: number): Promise<Map<string, { seq: number; retain: boolean }>> {
  const got = new Map<string, { seq: number; retain: boolean }>()
  const onPacket = (wire: Wire, p: Packet) => {
    if (p.cmd === 'publish') {
      const [pub, seq] = Buffer.from(p.payload).toString().split(':')
      got.set(pub!, { seq: Number(seq), retain: p.retain })
      if (p.qos === 1) wire.send(pb.puback(p.messageId!, { version: 5 }))
      if (p.qos === 2) wire.send(pb.pubrec(p.messageId!, { version: 5 }))
    } else if (p.cmd === 'pubrel') wire.send(pb.pubcomp(p.messageId!, { version: 5 }))
    signal.notify()
  }
  const wire = await Wire.open(port, 5, pb.connect({ version: 5, clientId: 'torture-retained-check', clean: true, keepalive: 0 }), {
    connack: (_, p) => connackCode(p) === 0, packet: onPacket, close: () => signal.notify(),
  })
  if (wire === null) return got
  wire.send(pb.subscribe(1, [{ topic: 'torture/r/+', qos: 2 }], { version: 5 }))
  await signal.until(() => got.size >= count || wire.closed, timeoutMs)
  wire.end(pb.disconnect({ version: 5 }))
  return got
}

export interface AnalysisInput {
  publishers: { id: string; qos: 1 | 2; ackedData: readonly number[]; lastAckedRetained: number; nextSeq: number }[]
  subscribers: { id: string; arrivals: ReadonlyMap<string, readonly number[]> }[]
  /** Retained message found per publisher id at the end. */
  retained: ReadonlyMap<string, { seq: number; retain: boolean }>
}

export interface Analysis {
  expectedDeliveries: number
  delivered: number
  duplicates: { qos1: number; qos2: number }
  losses: number
  orderViolations: number
  retainedMismatches: number
  unknown: number
  problems: string[]
}

/**
 * The checks, per (subscriber, publisher) pair:
 * - every data message the broker acknowledged arrived at least once (no loss);
 * - QoS 2: nothing arrived twice; QoS 1: duplicates are allowed;
 * - order: drop every arrival of a sequence number already seen, and the remaining "first
 *   deliveries" must be strictly increasing. Why this definition: each publisher sends on one
 *   topic, so [MQTT-4.6.0-5]/(v3.1.1 4.6.0-6) ordered topics require its messages to reach a
 *   subscriber in publish order. A resend after a reconnect (DUP, or the broker's own resend of
 *   unacknowledged deliveries) legitimately repeats messages already delivered, and a publisher
 *   resending after a crash may repeat one the broker had accepted without acking. Those
 *   repeats are duplicates, allowed at QoS 1, so order is judged on first deliveries only: a
 *   message may never be delivered for the first time after a later one was. Gaps are allowed
 *   (every 5th sequence number goes to the retained topic);
 * - retained: the retained topic of each publisher holds its last acknowledged value.
 */
export function analyse(input: AnalysisInput): Analysis {
  const a: Analysis = { expectedDeliveries: 0, delivered: 0, duplicates: { qos1: 0, qos2: 0 }, losses: 0, orderViolations: 0, retainedMismatches: 0, unknown: 0, problems: [] }
  const problem = (s: string) => { if (a.problems.length < 30) a.problems.push(s) }
  for (const sub of input.subscribers) {
    for (const pub of input.publishers) {
      const arrivals = sub.arrivals.get(pub.id) ?? []
      const seen = new Set<number>()
      let last = 0
      let dups = 0
      for (const seq of arrivals) {
        if (seen.has(seq)) { dups++; continue }
        seen.add(seq)
        if (seq <= last) { a.orderViolations++; problem(`order: ${sub.id} got ${pub.id}:${seq} first after ${pub.id}:${last}`) }
        if (seq >= pub.nextSeq || seq <= 0) { a.unknown++; problem(`unknown: ${sub.id} got ${pub.id}:${seq}, never published`) }
        last = Math.max(last, seq)
      }
      if (pub.qos === 1) a.duplicates.qos1 += dups
      else {
        a.duplicates.qos2 += dups
        if (dups > 0) problem(`QoS 2 duplicates: ${sub.id} got ${dups} messages of ${pub.id} twice`)
      }
      let lost = 0
      for (const seq of pub.ackedData) {
        a.expectedDeliveries++
        if (seen.has(seq)) a.delivered++
        else if (lost++ < 3) problem(`loss: ${sub.id} never got acknowledged ${pub.id}:${seq}`)
      }
      a.losses += lost
    }
  }
  for (const pub of input.publishers) {
    const got = input.retained.get(pub.id)
    const want = pub.lastAckedRetained
    if ((got?.seq ?? 0) !== want || (got !== undefined && !got.retain)) {
      a.retainedMismatches++
      problem(`retained: torture/r/${pub.id} holds ${got === undefined ? 'nothing' : `${got.seq}${got.retain ? '' : ' without RETAIN'}`}, last acknowledged ${want}`)
    }
  }
  return a
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Runs the whole torture: cycles of traffic and SIGKILL, a final drain, the checks. */
export async function runTorture(o: TortureOptions): Promise<TortureReport> {
  const started = Date.now()
  const rnd = prng(o.seed)
  const log = o.log ?? (() => {})
  const minUp = o.minUpMs ?? 50
  const maxUp = o.maxUpMs ?? 600
  const lateChance = o.lateChance ?? 0.25
  const durability = o.durability ?? 'fsync'
  const problems: string[] = []
  const problem = (s: string) => { if (problems.length < 200) problems.push(s) }
  const complaints: string[] = []
  const signal = new Signal()
  const dir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'vmqtt-torture-'))
  const env = {
    VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_ADMIN_PORT: 'off', VMQTT_SYS_INTERVAL: '0',
    VMQTT_DATA_DIR: dir, VMQTT_DATA_STORE: o.store ?? 'sqlite', VMQTT_DATA_DURABILITY: durability,
    VMQTT_LOG_LEVEL: 'info', VMQTT_LIMITS_MAX_INFLIGHT: '100', VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '10000000', ...o.env,
  }
  const root = o.root ?? ROOT
  const window = o.window ?? 10
  const pubs = [
    new Publisher('p4q1', 4, 1, window, problem, signal), new Publisher('p4q2', 4, 2, window, problem, signal),
    new Publisher('p5q1', 5, 1, window, problem, signal), new Publisher('p5q2', 5, 2, window, problem, signal),
  ]
  const qosOf = new Map(pubs.map((p) => [p.id, p.qos]))
  const subs = [
    // the broker's inflight window (100) applies to v4; s5b's Receive Maximum of 10 keeps it behind (a standing queue)
    new Subscriber('s4a', 4, 0, qosOf, problem, signal), new Subscriber('s4b', 4, 0, qosOf, problem, signal),
    new Subscriber('s5a', 5, 100, qosOf, problem, signal), new Subscriber('s5b', 5, 10, qosOf, problem, signal),
  ]
  let broker: BrokerProcess | null = null
  let exitCode: number | null = null
  const lateTimers: ReturnType<typeof setTimeout>[] = []
  const pending: Promise<boolean>[] = []
  /** Publishers reconnect at once; each subscriber at once or, by chance, a random time later. */
  const connectAll = (port: number) => {
    for (const p of pubs) pending.push(p.connect(port))
    for (const s of subs) {
      const ms = rnd() < lateChance ? Math.round(rnd() * maxUp) : 0
      if (ms <= 0) pending.push(s.connect(port))
      else lateTimers.push(setTimeout(() => pending.push(s.connect(port)), ms))
    }
  }
  const settle = async () => {
    for (const t of lateTimers.splice(0)) clearTimeout(t)
    await Promise.all(pending.splice(0))
  }
  const starts: number[] = []
  const acked = () => pubs.reduce((n, p) => n + p.ackedData.length + p.ackedRetained, 0)
  try {
    broker = await BrokerProcess.start(root, env, complaints)
    // first connection: subscriptions exist before any message is published
    for (const s of subs) if (!(await s.connect(broker.port))) throw new Error(`subscriber ${s.id} could not subscribe`)
    for (const p of pubs) pending.push(p.connect(broker.port))
    for (let cycle = 1; cycle <= o.cycles; cycle++) {
      const up = Math.round(minUp + rnd() * (maxUp - minUp))
      const before = acked()
      await delay(up) // the random moment of the kill: the point of the test, not a synchronisation
      await broker.kill()
      await settle()
      log(`cycle ${cycle}/${o.cycles}: killed after ${up} ms, acknowledged +${acked() - before} (total ${acked()})`)
      const t0 = Date.now()
      broker = await BrokerProcess.start(root, env, complaints)
      starts.push(Date.now() - t0)
      log(`  restarted in ${starts.at(-1)} ms`)
      connectAll(broker.port)
    }
    // final drain: everyone online, no new messages, every flow completes
    await settle()
    for (const c of [...pubs, ...subs]) if (!c.connected) await c.connect(broker.port)
    for (const p of pubs) p.producing = false
    const drainMs = o.drainTimeoutMs ?? 10_000
    const drainMax = drainMs * 30
    if (!(await signal.untilStalled(() => pubs.every((p) => p.inflight.size === 0), drainMs, drainMax))) {
      problem(`drain: publishers still have ${pubs.map((p) => `${p.id}=${p.inflight.size}`).join(' ')} in flight (connected: ${pubs.map((p) => p.connected).join(',')})`)
    }
    for (const s of subs) {
      s.missing = new Set()
      for (const p of pubs) for (const seq of p.ackedData) if (!s.seen.get(p.id)?.has(seq)) s.missing.add(`${p.id}:${seq}`)
    }
    await signal.untilStalled(() => subs.every((s) => s.missing!.size === 0), drainMs, drainMax)
    const retained = await readRetained(broker.port, pubs.filter((p) => p.lastAckedRetained > 0).length, signal, Math.min(drainMs, 5000))
    for (const c of [...pubs, ...subs]) c.close()
    exitCode = await broker.stop()
    broker = null
    const a = analyse({ publishers: pubs, subscribers: subs, retained })
    const protocolErrors = problems.filter((p) => !p.startsWith('session lost') && !p.startsWith('drain')).length
    const report: TortureReport = {
      seed: o.seed, cycles: o.cycles, durability: `${o.store ?? 'sqlite'}/${durability}`, elapsedMs: Date.now() - started,
      published: pubs.reduce((n, p) => n + p.nextSeq - 1, 0),
      acknowledged: {
        qos1: pubs.filter((p) => p.qos === 1).reduce((n, p) => n + p.ackedData.length + p.ackedRetained, 0),
        qos2: pubs.filter((p) => p.qos === 2).reduce((n, p) => n + p.ackedData.length + p.ackedRetained, 0),
        retained: pubs.reduce((n, p) => n + p.ackedRetained, 0),
      },
      resent: { publish: pubs.reduce((n, p) => n + p.resentPublish, 0), pubrel: pubs.reduce((n, p) => n + p.resentPubrel, 0) },
      expectedDeliveries: a.expectedDeliveries, delivered: a.delivered, duplicates: a.duplicates, losses: a.losses,
      orderViolations: a.orderViolations, retainedMismatches: a.retainedMismatches,
      sessionsLost: problems.filter((p) => p.startsWith('session lost')).length,
      protocolErrors: protocolErrors + a.unknown,
      brokerComplaints: complaints.slice(0, 20), brokerExitCode: exitCode,
      restartMs: { mean: Math.round(starts.reduce((a, b) => a + b, 0) / Math.max(starts.length, 1)), max: Math.max(0, ...starts) },
      problems: [...problems.slice(0, 20), ...a.problems], ok: false,
    }
    report.ok = report.losses === 0 && report.duplicates.qos2 === 0 && report.orderViolations === 0 &&
      report.retainedMismatches === 0 && report.sessionsLost === 0 && report.protocolErrors === 0 &&
      problems.length === 0 && exitCode === 0 && complaints.length === 0
    return report
  } finally {
    for (const t of lateTimers) clearTimeout(t)
    for (const c of [...pubs, ...subs]) c.wire?.destroy()
    if (broker !== null) await broker.kill()
    if (o.dataDir === undefined) rmSync(dir, { recursive: true, force: true })
  }
}

/** One-paragraph summary of a report. */
export function summary(r: TortureReport): string {
  return [
    `torture ${r.ok ? 'PASSED' : 'FAILED'}: seed ${r.seed}, ${r.cycles} kill cycles, ${r.durability}, ${(r.elapsedMs / 1000).toFixed(1)} s`,
    `published ${r.published}; acknowledged QoS 1 ${r.acknowledged.qos1}, QoS 2 ${r.acknowledged.qos2} (retained ${r.acknowledged.retained}); resent ${r.resent.publish} PUBLISH (DUP) + ${r.resent.pubrel} PUBREL`,
    `deliveries expected ${r.expectedDeliveries}, delivered ${r.delivered}; duplicates QoS 1 ${r.duplicates.qos1}, QoS 2 ${r.duplicates.qos2}; losses ${r.losses}; order violations ${r.orderViolations}`,
    `retained mismatches ${r.retainedMismatches}; sessions lost ${r.sessionsLost}; protocol errors ${r.protocolErrors}; broker warn/error lines ${r.brokerComplaints.length}; graceful exit code ${r.brokerExitCode}`,
    `restart after SIGKILL (spawn to listening): mean ${r.restartMs.mean} ms, max ${r.restartMs.max} ms`,
    ...r.problems.map((p) => `  - ${p}`),
    ...r.brokerComplaints.slice(0, 5).map((c) => `  broker: ${c}`),
  ].join('\n')
}

/** Broker process, raw wire, publishers and subscribers of the kill -9 torture test (see torture.ts). */
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import mqttPacket, { type Packet } from 'mqtt-packet'
import * as pb from './packet-builder.ts'

type Version = 4 | 5

export { prng } from './prng.ts'

/** Wakes waiters whenever a client saw something; waits re-check their condition (no polling). */
export class Signal {
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
export class BrokerProcess {
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

export interface WireHandlers {
  connack(wire: Wire, p: Packet): boolean
  packet(wire: Wire, p: Packet): void
  close(wire: Wire): void
}

/** One TCP connection: coalesced writes, mqtt-packet decoding, CONNACK handshake. */
export class Wire {
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

export function connectBytes(version: Version, clientId: string, clean: boolean, extra: pb.Props = {}): Buffer {
  return pb.connect({ version, clientId, clean, keepalive: 0, properties: version === 5 ? { sessionExpiry: 3600, ...extra } : undefined })
}

export function connackCode(p: Packet): number {
  const c = p as { returnCode?: number; reasonCode?: number }
  return c.reasonCode ?? c.returnCode ?? 0
}

export interface Outgoing { seq: number; topic: string; retain: boolean; state: 'publish' | 'pubrel'; order?: number }

/** After a v5 PUBACK / PUBREC 0x97 (a subscriber queue full, session.queueOverflow=refuse): publish again this much later. */
const REFUSED_RETRY_MS = 20

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
  /** Publications the broker refused (v5 0x97) and that were published again. */
  refused = 0
  /** Their sequence numbers: a later message may have been accepted first, so order is not judged on them. */
  readonly republished = new Set<number>()
  /** Treat 0x97 as "try again later" (the refuse overflow policy) instead of a problem. */
  retryRefused = false
  #retry: Outgoing[] = []
  #retryTimer: ReturnType<typeof setTimeout> | null = null
  #sent = 0
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
    if (this.#retryTimer !== null) return
    while (this.#retry.length > 0 && this.inflight.size < this.#window) {
      const o = this.#retry.shift()!
      const id = this.#allocId()
      this.inflight.set(id, o)
      this.#publish(id, o, false)
    }
    // new messages only once the refused ones went through again
    while (this.producing && this.#retry.length === 0 && this.inflight.size < this.#window) {
      const seq = this.nextSeq++
      const retain = seq % 5 === 0
      const o: Outgoing = { seq, topic: retain ? this.retainedTopic : this.dataTopic, retain, state: 'publish' }
      const id = this.#allocId()
      this.inflight.set(id, o)
      this.#publish(id, o, false)
    }
  }

  close(): void {
    if (this.#retryTimer !== null) { clearTimeout(this.#retryTimer); this.#retryTimer = null }
    this.wire?.end(pb.disconnect({ version: this.version }))
  }

  /** Refused messages still to publish again. */
  get retrying(): number { return this.#retry.length }

  #publish(id: number, o: Outgoing, dup: boolean): void {
    o.order = ++this.#sent
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
    const order = o.order ?? 0
    if (order < this.#lastAckInConn) this.#problem(`ack order: publisher ${this.id} got the ack of ${o.seq} out of send order`)
    this.#lastAckInConn = order
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
      if (rc === 0x97 && this.retryRefused) {
        // refused, not acknowledged: publish it again a little later (a new flow, a new packet id)
        this.inflight.delete(id)
        this.refused++
        this.republished.add(o.seq)
        o.state = 'publish'
        this.#retry.push(o)
        this.#retryTimer ??= setTimeout(() => { this.#retryTimer = null; this.pump() }, REFUSED_RETRY_MS)
      } else if (rc >= 0x80) {
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

  /** DISCONNECT; the subscriber counts as away at once (a reconnect does not wait for the socket to close). */
  close(): void {
    this.wire?.end(pb.disconnect({ version: this.version }))
    this.wire = null
    this.connected = false
  }

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
export async function readRetained(port: number, count: number, signal: Signal, timeoutMs: number): Promise<Map<string, { seq: number; retain: boolean }>> {
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

/**
 * The broker's drop counters by reason ($SYS/broker/messages/dropped/<reason>, VMQTT_SYS_INTERVAL=1):
 * read after the third publication of the total, so they are newer than the subscription.
 */
export async function readSysDrops(port: number, signal: Signal, timeoutMs: number): Promise<Map<string, number> | null> {
  const got = new Map<string, number>()
  let totals = 0
  const onPacket = (_: Wire, p: Packet) => {
    if (p.cmd !== 'publish') return
    const reason = p.topic.slice('$SYS/broker/messages/dropped'.length + 1)
    if (reason === '') totals++
    else got.set(reason, Number(Buffer.from(p.payload).toString()))
    signal.notify()
  }
  const wire = await Wire.open(port, 5, pb.connect({ version: 5, clientId: 'torture-sys-check', clean: true, keepalive: 0 }), {
    connack: (_, p) => connackCode(p) === 0, packet: onPacket, close: () => signal.notify(),
  })
  if (wire === null) return null
  wire.send(pb.subscribe(1, [{ topic: '$SYS/broker/messages/dropped/#', qos: 0 }], { version: 5 }))
  // the third total follows the second round of reasons: those are newer than the subscription
  const ok = await signal.until(() => totals >= 3 || wire.closed, timeoutMs)
  wire.end(pb.disconnect({ version: 5 }))
  return ok && totals >= 3 ? got : null
}

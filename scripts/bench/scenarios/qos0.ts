/**
 * QoS 0 throughput: fan-in (8 publishers, 1 wildcard subscriber), fan-out (1 publisher, 100
 * subscribers), 64 KiB payloads (10 pairs) and 100 pairs (the latency scenario's calibration).
 *
 * Closed loop: publishers write batches of `batch` stamped PUBLISH packets in one write each
 * while the messages not yet delivered to every subscriber of their flow stay under `lead`, so
 * what is measured is the broker's delivery rate, not how much it can buffer. A flow that delivers
 * nothing for 500 ms while messages are outstanding counts them as dropped and goes on.
 */
import { Client, connectAll } from '../client.ts'
import { payloadOf, stampedBatch, subscriber, type Counter } from '../generator.ts'
import { publishTemplate, type PublishTemplate } from '../packets.ts'
import { Histogram } from '../stats.ts'
import { measureWindow, MSGS, P50, P99, P999, type Metrics, type RunContext, type Scenario } from './types.ts'

interface Shape {
  flows: number
  pubs: number
  subs: number
  payload: number
  /** Messages (not deliveries) a flow may have outstanding. */
  lead: number
  batch: number
  wildcard: boolean
  /** Subscribers use this filter instead (e.g. `#`). */
  filter?: string
  /** Every message on its own topic, `.../dev<6 digits>/temp` (per-device telemetry). */
  devices?: boolean
}

const DEVICE_DIGITS = 6

interface Flow { pubs: Client[]; templates: PublishTemplate[]; spare: (Buffer | null)[]; subs: number; counter: Counter; sent: number; dropped: number; lastRecvAt: number; digitsAt: number[] }

const DROP_AFTER_MS = 500

function pump(f: Flow, shape: Shape, running: () => boolean): void {
  for (;;) {
    let wrote = false
    for (let i = 0; i < f.pubs.length; i++) {
      if (!running()) return
      const p = f.pubs[i]!
      if (p.blocked) continue
      // whole batches only: refilling one message per delivery would turn the load into tiny writes
      const room = shape.lead - (f.sent * f.subs - f.counter.received - f.dropped) / f.subs
      if (room < shape.batch) return
      const n = shape.batch
      const b = stampedBatch(f.templates[i]!, n, null, f.spare[i] ?? null)
      if (shape.devices === true) deviceTopics(b, f.templates[i]!.bytes.length, f.digitsAt[i]!, n, f.sent)
      p.write(b)
      // a buffer the kernel took whole is stamped again next time instead of copied (64 KiB payloads)
      f.spare[i] = p.blocked ? null : b
      f.sent += n
      wrote = true
    }
    if (!wrote) return
  }
}

/** Writes device numbers first, first + 1, ... into the topics of a batch of n messages. */
function deviceTopics(b: Buffer, len: number, at: number, n: number, first: number): void {
  for (let i = 0; i < n; i++) {
    let v = (first + i) % 10 ** DEVICE_DIGITS
    for (let d = DEVICE_DIGITS - 1; d >= 0; d--) { b[i * len + at + d] = 48 + (v % 10); v = Math.floor(v / 10) }
  }
}

export async function runQos0(ctx: RunContext, shape: Shape): Promise<Metrics> {
  const { broker, version, tag } = ctx
  const hist = new Histogram()
  const payload = payloadOf(shape.payload)
  let running = true
  const isRunning = () => running
  const flows: Flow[] = []
  const all: Client[] = []
  for (let fi = 0; fi < shape.flows; fi++) {
    const base = `bench/${tag}/${fi}`
    const f: Flow = { pubs: [], templates: [], spare: [], subs: shape.subs, counter: { received: 0 }, sent: 0, dropped: 0, lastRecvAt: 0, digitsAt: [] }
    const subs = await connectAll(shape.subs, async (si) => {
      const s = subscriber(version, f.counter, hist, () => { f.lastRecvAt = performance.now(); pump(f, shape, isRunning) })
      await s.connect(broker.port, { clientId: `${tag}-f${fi}-s${si}`, version })
      await s.subscribe(shape.filter ?? (shape.wildcard ? `${base}/#` : `${base}/t`), 0)
      return s
    })
    f.pubs = await connectAll(shape.pubs, async (pi) => {
      const p = new Client()
      p.state.onDrain = () => pump(f, shape, isRunning)
      await p.connect(broker.port, { clientId: `${tag}-f${fi}-p${pi}`, version })
      return p
    })
    const topicOf = (pi: number) => shape.devices === true ? `${base}/${pi}/dev${'0'.repeat(DEVICE_DIGITS)}/temp` : shape.wildcard ? `${base}/${pi}` : `${base}/t`
    f.templates = f.pubs.map((_, pi) => publishTemplate(topicOf(pi), payload, 0, version))
    // the topic ends just before the packet id (QoS 0: the properties or payload)
    f.digitsAt = f.templates.map((t, pi) => t.idAt - Buffer.byteLength(topicOf(pi)) + topicOf(pi).indexOf('/dev') + 4)
    all.push(...subs, ...f.pubs)
    flows.push(f)
  }
  const watchdog = setInterval(() => {
    const now = performance.now()
    for (const f of flows) {
      const outstanding = f.sent * f.subs - f.counter.received - f.dropped
      if (outstanding > 0 && now - f.lastRecvAt > DROP_AFTER_MS) {
        f.dropped += outstanding
        f.lastRecvAt = now
        pump(f, shape, isRunning)
      }
    }
  }, 100)
  const t = performance.now()
  for (const f of flows) { f.lastRecvAt = t; pump(f, shape, isRunning) }
  const delivered = () => flows.reduce((a, f) => a + f.counter.received, 0)
  const m = await measureWindow(ctx, delivered, hist)
  running = false
  clearInterval(watchdog)
  for (const c of all) c.close()
  return { ...m, dropped: flows.reduce((a, f) => a + f.dropped, 0), mibPerSec: (m.msgsPerSec! * shape.payload) / 1048576 }
}

const LAT = [P50, P99, P999]

export const fanIn: Scenario = {
  name: 'fan-in',
  title: 'QoS 0 fan-in: 8 publishers -> 1 wildcard subscriber, 16 B',
  metrics: [MSGS, ...LAT],
  run: (ctx) => runQos0(ctx, { flows: 1, pubs: 8, subs: 1, payload: 16, lead: 4000, batch: 100, wildcard: true }),
}

export const fanOut: Scenario = {
  name: 'fan-out',
  title: 'QoS 0 fan-out: 1 publisher -> 100 subscribers, 16 B (deliveries/s)',
  metrics: [MSGS, ...LAT],
  run: (ctx) => runQos0(ctx, { flows: 1, pubs: 1, subs: 100, payload: 16, lead: 1000, batch: 50, wildcard: false }),
}

/** Fan-out to subscribers on `#` (monitoring tools, bridges): with `vmqtt-acl`, every delivery passes a read check. */
export const fanOutAll: Scenario = {
  name: 'fan-out-all',
  title: 'QoS 0 fan-out: 1 publisher -> 100 subscribers on #, 16 B (deliveries/s)',
  metrics: [MSGS, ...LAT],
  run: (ctx) => runQos0(ctx, { flows: 1, pubs: 1, subs: 100, payload: 16, lead: 1000, batch: 50, wildcard: false, filter: '#' }),
}

/** Per-device telemetry: every message on its own topic (no cached match list helps), subscribers on `#`. */
export const fanOutDevices: Scenario = {
  name: 'fan-out-devices',
  title: 'QoS 0 fan-out: 1 publisher -> 100 subscribers on #, a topic per message, 16 B (deliveries/s)',
  metrics: [MSGS, ...LAT],
  run: (ctx) => runQos0(ctx, { flows: 1, pubs: 1, subs: 100, payload: 16, lead: 1000, batch: 50, wildcard: false, filter: '#', devices: true }),
}

export const large: Scenario = {
  name: 'large',
  title: 'QoS 0, 64 KiB payload: 10 publisher/subscriber pairs',
  metrics: [MSGS, { key: 'mibPerSec', label: 'MiB/s', unit: 'MiB/s', better: 'higher' }, P99],
  run: (ctx) => runQos0(ctx, { flows: 10, pubs: 1, subs: 1, payload: 65536, lead: 16, batch: 4, wildcard: false }),
}

/** 100 QoS 0 pairs at full speed: Mosquitto's rate here, halved, is the latency scenario's load. */
export const qos0Pairs: Scenario = {
  name: 'qos0-pairs',
  title: 'QoS 0 pairs: 100 publisher/subscriber pairs, 16 B (latency calibration)',
  metrics: [MSGS, ...LAT],
  run: (ctx) => runQos0(ctx, { flows: 100, pubs: 1, subs: 1, payload: 16, lead: 200, batch: 50, wildcard: false }),
}

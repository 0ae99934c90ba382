/**
 * Latency at a fixed rate: 100 QoS 0 publisher/subscriber pairs sharing a fixed total rate
 * (by default half of Mosquitto's measured 100-pair QoS 0 maximum, see qos0-pairs; or --rate).
 * Every millisecond the messages that have come due are written, round robin over the pairs,
 * each stamped with its send time; the subscribers record receive time - send time.
 * p50/p99/p99.9 over the messages received in the measurement window.
 */
import { Client, connectAll } from '../client.ts'
import { payloadOf, stampedBatch, subscriber } from '../generator.ts'
import { publishTemplate } from '../packets.ts'
import { Histogram } from '../stats.ts'
import { measureWindow, MSGS, P50, P99, P999, type Metrics, type RunContext, type Scenario } from './types.ts'

const PAIRS = 100
const PAYLOAD = 16

export async function runLatency(ctx: RunContext): Promise<Metrics> {
  const { broker, version, tag, rate } = ctx
  const hist = new Histogram()
  const counter = { received: 0 }
  const payload = payloadOf(PAYLOAD)
  const pairs = await connectAll(PAIRS, async (i) => {
    const topic = `bench/${tag}/${i}`
    const sub = subscriber(version, counter, hist)
    await sub.connect(broker.port, { clientId: `${tag}-s${i}`, version })
    await sub.subscribe(topic, 0)
    const pub = new Client()
    await pub.connect(broker.port, { clientId: `${tag}-p${i}`, version })
    return { pub, sub, template: publishTemplate(topic, payload, 0, version) }
  })
  const due = new Int32Array(PAIRS)
  let cursor = 0, scheduled = 0
  const t0 = performance.now()
  const tick = setInterval(() => {
    const target = Math.floor(((performance.now() - t0) * rate) / 1000)
    for (; scheduled < target; scheduled++) { due[cursor]!++; cursor = cursor === PAIRS - 1 ? 0 : cursor + 1 }
    for (let i = 0; i < PAIRS; i++) {
      const n = due[i]!
      if (n === 0) continue
      due[i] = 0
      const p = pairs[i]!
      p.pub.write(stampedBatch(p.template, n, null))
    }
  }, 1)
  const m = await measureWindow(ctx, () => counter.received, hist)
  clearInterval(tick)
  for (const p of pairs) { p.pub.close(); p.sub.close() }
  return { ...m, rate }
}

export const latency: Scenario = {
  name: 'latency',
  title: `Latency at a fixed rate: ${PAIRS} QoS 0 pairs, ${PAYLOAD} B, half of Mosquitto's qos0-pairs maximum (or --rate)`,
  metrics: [P50, P99, P999, { ...MSGS, label: 'msgs/s delivered', chart: undefined }],
  run: runLatency,
}

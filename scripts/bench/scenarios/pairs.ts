/**
 * QoS 1 and QoS 2 pairs: 50 publisher/subscriber pairs, publisher i publishing to its own topic
 * and subscriber i subscribed to it with the same QoS, acknowledging every message. Each
 * publisher keeps up to `window` PUBLISH unacknowledged (64: throughput; 1: bound by round
 * trips; capped by the broker's v5 Receive Maximum) and stays at most 500 messages ahead of its
 * subscriber. Counted: deliveries at the subscribers.
 */
import { connectAll } from '../client.ts'
import { payloadOf, subscriber, WindowedPublisher } from '../generator.ts'
import { Histogram } from '../stats.ts'
import { measureWindow, MSGS, P50, P99, P999, type Metrics, type RunContext, type Scenario } from './types.ts'

const PAIRS = 50
const LEAD = 500
const PAYLOAD = 16

export async function runPairs(ctx: RunContext, qos: 1 | 2, window: number, pairs = PAIRS): Promise<Metrics> {
  const { broker, version, tag } = ctx
  const hist = new Histogram()
  const payload = payloadOf(PAYLOAD)
  const pubs = await connectAll(pairs, async (i) => {
    const counter = { received: 0 }
    const topic = `bench/${tag}/${i}`
    const pub = new WindowedPublisher(topic, payload, qos, version, window, LEAD, counter)
    const sub = subscriber(version, counter, hist, () => pub.refill())
    await sub.connect(broker.port, { clientId: `${tag}-s${i}`, version })
    await sub.subscribe(topic, qos)
    await pub.client.connect(broker.port, { clientId: `${tag}-p${i}`, version })
    pub.connected()
    return { pub, sub }
  })
  for (const p of pubs) p.pub.refill()
  const m = await measureWindow(ctx, () => pubs.reduce((a, p) => a + p.pub.counter.received, 0), hist)
  for (const p of pubs) { p.pub.running = false; p.pub.client.close(); p.sub.close() }
  return { ...m, window: Math.min(...pubs.map((p) => p.pub.window)) }
}

const metrics = [MSGS, P50, P99, P999]

function pairScenario(qos: 1 | 2, window: number): Scenario {
  return {
    name: `qos${qos}-w${window}`,
    title: `QoS ${qos}: ${PAIRS} publisher/subscriber pairs, inflight window ${window} per publisher, ${PAYLOAD} B`,
    metrics,
    run: (ctx) => runPairs(ctx, qos, window),
  }
}

export const qos1w64 = pairScenario(1, 64)
export const qos1w1 = pairScenario(1, 1)
export const qos2w64 = pairScenario(2, 64)
export const qos2w1 = pairScenario(2, 1)

/**
 * Shared subscriptions ($share/{ShareName}/{filter}): one copy per group, round robin inside a
 * group, independence from other groups and ordinary subscribers, share name validation, no
 * retained messages, No Local rejection, the "shared subscriptions off" switch, and MQTT.js.
 */
import { describe, expect, test } from 'bun:test'
import mqtt from 'mqtt'
import type { IDisconnectPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { openAccepted as open } from '../helpers/open.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = (typeof VERSIONS)[number]


async function subscribeCodes(c: RawClient, v: V, subs: b.Subscription[], id = 3): Promise<number[]> {
  c.send(b.subscribe(id, subs, { version: v }))
  const ack = (await c.nextOf('suback')) as ISubackPacket
  expect(ack.messageId).toBe(id)
  return ack.granted as number[]
}

async function member(port: number, v: V, clientId: string, filter: string, qos = 0): Promise<RawClient> {
  const { c } = await open(port, { version: v, clientId })
  expect(await subscribeCodes(c, v, [{ topic: filter, qos }])).toEqual([qos])
  return c
}

/** Publishes QoS 1 messages and waits for each PUBACK, so every one has been routed. */
async function publishAll(pub: RawClient, v: V, topic: string, payloads: string[]): Promise<void> {
  for (const [i, payload] of payloads.entries()) {
    pub.send(b.publish({ topic, payload, qos: 1, packetId: i + 1, version: v }))
    expect((await pub.nextOf('puback')).messageId).toBe(i + 1)
  }
}

async function take(c: RawClient, n: number): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; i < n; i++) out.push(((await c.nextOf('publish')) as IPublishPacket).payload.toString())
  return out
}

describe.each(VERSIONS)('shared subscription delivery, MQTT version %i', (v) => {
  test('[4.8.2] each message goes to exactly one member of the group, round robin between two members', async () => {
    await using br = await startBroker()
    await using a = await member(br.port, v, 'a', '$share/g/jobs/+')
    await using c = await member(br.port, v, 'c', '$share/g/jobs/+')
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    await publishAll(pub, v, 'jobs/x', ['j1', 'j2', 'j3', 'j4', 'j5', 'j6'])
    const gotA = await take(a, 3)
    const gotC = await take(c, 3)
    await a.expectNothing(200)
    await c.expectNothing(50)
    // alternating: one member has the odd messages, the other the even ones
    const odd = ['j1', 'j3', 'j5'], even = ['j2', 'j4', 'j6']
    expect([gotA, gotC]).toContainEqual(odd)
    expect([gotA, gotC]).toContainEqual(even)
  })

  test('[4.8.2] two groups on the same filter each get one copy, and an ordinary subscriber gets its own', async () => {
    await using br = await startBroker()
    await using g1 = await member(br.port, v, 'g1', '$share/one/news')
    await using g2 = await member(br.port, v, 'g2', '$share/two/news')
    await using plain = await member(br.port, v, 'plain', 'news')
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    await publishAll(pub, v, 'news', ['n1'])
    for (const c of [g1, g2, plain]) {
      const p = (await c.nextOf('publish')) as IPublishPacket
      expect(p.topic).toBe('news')
      expect(p.payload.toString()).toBe('n1')
    }
    await g1.expectNothing(200)
    await g2.expectNothing(0)
    await plain.expectNothing(0)
  })

  test('[MQTT-4.8.2-3] a member gets the message at the QoS granted to its own subscription', async () => {
    await using br = await startBroker()
    await using q0 = await member(br.port, v, 'q0', '$share/mixed/q', 0)
    await using q1 = await member(br.port, v, 'q1', '$share/mixed/q', 1)
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    await publishAll(pub, v, 'q', ['first', 'second'])
    const p0 = (await q0.nextOf('publish')) as IPublishPacket
    const p1 = (await q1.nextOf('publish')) as IPublishPacket
    expect(p0.qos).toBe(0)
    expect(p1.qos).toBe(1)
    q1.send(b.puback(p1.messageId!, { version: v }))
  })

  test('[MQTT-4.8.2-1] [MQTT-4.8.2-2] malformed share names get a failure return code in SUBACK', async () => {
    await using br = await startBroker()
    await using c = (await open(br.port, { version: v, clientId: 'bad-shares' })).c
    const failure = v === 5 ? 0x8f : 0x80
    // MQTT 3.1.1 has no shared subscriptions: '$share/g+/x' is an invalid filter there, which
    // closes the connection (34-strict.test.ts); the others are valid 3.1.1 filters
    const invalid311 = [{ topic: '$share/g+/x' }, { topic: '$share/g#/x' }]
    const codes = await subscribeCodes(c, v, [
      ...(v === 5 ? invalid311 : []), { topic: '$share/g' }, { topic: '$share//x' },
      { topic: '$share/g/' }, { topic: '$share/ok/x' },
    ])
    expect(codes).toEqual([...(v === 5 ? [failure, failure] : []), failure, failure, failure, 0])
  })

  test('[3.3.1.3] a new shared subscription gets no retained messages', async () => {
    await using br = await startBroker()
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    pub.send(b.publish({ topic: 'state/lamp', payload: 'on', qos: 1, packetId: 1, retain: true, version: v }))
    await pub.nextOf('puback')
    // an ordinary subscription proves the retained message is there
    await using plain = await member(br.port, v, 'plain', 'state/+')
    const r = (await plain.nextOf('publish')) as IPublishPacket
    expect(r.retain).toBe(true)
    expect(r.payload.toString()).toBe('on')
    await using shared = await member(br.port, v, 'shared', '$share/g/state/+')
    await shared.expectNothing(250)
  })
})

describe('MQTT 5 shared subscription rules', () => {
  test('[MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82', async () => {
    await using br = await startBroker()
    const { c } = await open(br.port, { version: 5, clientId: 'nl' })
    c.send(b.subscribe(1, [{ topic: '$share/g/t', qos: 1, nl: true }], { version: 5 }))
    const d = (await c.nextOf('disconnect')) as IDisconnectPacket
    expect(d.reasonCode).toBe(0x82)
    await c.closed()
  })

  test('VMQTT_LIMITS_SHARED_SUBSCRIPTIONS=false: CONNACK says Shared Subscription Available 0 and SUBACK has 0x9E', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_SHARED_SUBSCRIPTIONS: 'false' })
    const { c, ack } = await open(br.port, { version: 5, clientId: 'no-share' })
    await using _c = c
    expect(ack.properties?.sharedSubscriptionAvailable).toBe(false)
    expect(await subscribeCodes(c, 5, [{ topic: '$share/g/t', qos: 1 }, { topic: 't', qos: 1 }])).toEqual([0x9e, 1])
    // and nothing is delivered through the refused subscription
    await using pub = (await open(br.port, { version: 5, clientId: 'pub' })).c
    await publishAll(pub, 5, 't', ['once'])
    const p = (await c.nextOf('publish')) as IPublishPacket
    expect(p.payload.toString()).toBe('once')
    c.send(b.puback(p.messageId!, { version: 5 }))
    await c.expectNothing(200)
  })

  test('VMQTT_LIMITS_SHARED_SUBSCRIPTIONS=false: an MQTT 3.1.1 shared subscription gets SUBACK 0x80', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_SHARED_SUBSCRIPTIONS: 'false' })
    await using c = (await open(br.port, { version: 4, clientId: 'no-share-v4' })).c
    expect(await subscribeCodes(c, 4, [{ topic: '$share/g/t', qos: 1 }])).toEqual([0x80])
  })
})

describe('MQTT.js interoperability', () => {
  for (const protocolVersion of VERSIONS) {
    test(`[4.8.2] MQTT.js v${protocolVersion} workers sharing $share/workers/task/# split the messages between them`, async () => {
      await using br = await startBroker()
      const opts = { protocolVersion, reconnectPeriod: 0 } as const
      const w1 = await mqtt.connectAsync(br.url, { ...opts, clientId: 'w1' })
      const w2 = await mqtt.connectAsync(br.url, { ...opts, clientId: 'w2' })
      const pub = await mqtt.connectAsync(br.url, { ...opts, clientId: 'boss' })
      try {
        const got = new Map<string, string[]>([['w1', []], ['w2', []]])
        const total = 6
        let count = 0
        let done!: () => void
        const all = new Promise<void>((resolve) => { done = resolve })
        for (const [name, w] of [['w1', w1], ['w2', w2]] as const) {
          w.on('message', (topic, payload) => {
            got.get(name)!.push(`${topic}=${payload.toString()}`)
            if (++count === total) done()
          })
          const granted = await w.subscribeAsync('$share/workers/task/#', { qos: 1 })
          expect(granted.map((g) => g.qos)).toEqual([1])
        }
        for (let i = 1; i <= total; i++) await pub.publishAsync(`task/${i}`, `t${i}`, { qos: 1 })
        let timer: ReturnType<typeof setTimeout> | undefined
        await Promise.race([all, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`only ${count} of ${total} messages arrived`)), 3000) })])
        clearTimeout(timer)
        expect(got.get('w1')!.length).toBe(total / 2)
        expect(got.get('w2')!.length).toBe(total / 2)
        const every = [...got.get('w1')!, ...got.get('w2')!].sort()
        expect(every).toEqual(Array.from({ length: total }, (_, i) => `task/${i + 1}=t${i + 1}`).sort())
      } finally {
        await Promise.all([w1.endAsync(), w2.endAsync(), pub.endAsync()])
      }
    })
  }
})

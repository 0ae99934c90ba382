/**
 * MQTT 5 Topic Alias, both directions: aliases a client sets on its PUBLISH packets (resolved by
 * the broker, limited by the Topic Alias Maximum it announces) and aliases the broker sets on
 * PUBLISH packets to a subscriber (only when, and only up to, the subscriber's Topic Alias
 * Maximum). MQTT.js is used end to end with aliases on both sides.
 */
import { describe, expect, test } from 'bun:test'
import mqtt, { type IPublishPacket as MqttJsPublish } from 'mqtt'
import type { IDisconnectPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { openAccepted as open } from '../helpers/open.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = (typeof VERSIONS)[number]


async function subscriber(port: number, o: b.ConnectOpts, filter: string, qos = 0): Promise<RawClient> {
  const { c } = await open(port, o)
  c.send(b.subscribe(1, [{ topic: filter, qos }], { version: o.version }))
  expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([qos])
  return c
}

/** Sends one PUBLISH and expects the server to answer with DISCONNECT reason and close. */
async function expectDisconnect(c: RawClient, frame: Buffer, reason: number): Promise<void> {
  c.send(frame)
  const d = (await c.nextOf('disconnect')) as IDisconnectPacket
  expect(d.reasonCode).toBe(reason)
  await c.closed()
}

const aliased = (topic: string, alias: number, payload: string) =>
  b.publish({ topic, payload, version: 5, properties: { topicAlias: alias } })

describe('inbound Topic Alias (client to broker)', () => {
  for (const subV of VERSIONS) {
    test(`[MQTT-3.3.2-12] an alias set with a topic and then used with an empty topic reaches a v${subV} subscriber with the full topic`, async () => {
      await using br = await startBroker()
      await using sub = await subscriber(br.port, { version: subV, clientId: 'sub' }, 'sensors/#')
      const { c: pub, ack } = await open(br.port, { version: 5, clientId: 'pub' })
      await using _pub = pub
      const max = ack.properties?.topicAliasMaximum ?? 0
      expect(max).toBeGreaterThan(0)
      pub.send(aliased('sensors/temp', 1, 'one'))
      pub.send(aliased('', 1, 'two'))
      // the highest alias the broker announced is accepted too
      pub.send(aliased('sensors/hum', max, 'three'))
      pub.send(aliased('', max, 'four'))
      // remapping alias 1 to another topic
      pub.send(aliased('sensors/wind', 1, 'five'))
      pub.send(aliased('', 1, 'six'))
      const got: string[] = []
      for (let i = 0; i < 6; i++) {
        const raw = await sub.nextRaw()
        const p = sub.decode(raw) as IPublishPacket
        got.push(`${p.topic}=${p.payload.toString()}`)
        // the subscriber (no Topic Alias Maximum) sees a full topic and no alias
        expect(p.properties?.topicAlias).toBeUndefined()
      }
      expect(got).toEqual([
        'sensors/temp=one', 'sensors/temp=two', 'sensors/hum=three', 'sensors/hum=four', 'sensors/wind=five', 'sensors/wind=six',
      ])
    })
  }

  test('[MQTT-3.3.2-8] a Topic Alias of 0 gets DISCONNECT 0x94', async () => {
    await using br = await startBroker()
    const { c } = await open(br.port, { version: 5, clientId: 'zero' })
    await expectDisconnect(c, aliased('a/b', 0, 'x'), 0x94)
  })

  test('[MQTT-3.3.2-9] a Topic Alias above the announced Topic Alias Maximum gets DISCONNECT 0x94', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_TOPIC_ALIAS_MAXIMUM: '5' })
    const { c, ack } = await open(br.port, { version: 5, clientId: 'over' })
    expect(ack.properties?.topicAliasMaximum).toBe(5)
    c.send(aliased('a/b', 5, 'at the limit'))
    await expectDisconnect(c, aliased('a/c', 6, 'over the limit'), 0x94)
  })

  test('[MQTT-3.2.2-18] with VMQTT_LIMITS_TOPIC_ALIAS_MAXIMUM=0 no Topic Alias Maximum is announced and any alias gets DISCONNECT 0x94', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_TOPIC_ALIAS_MAXIMUM: '0' })
    const { c, ack } = await open(br.port, { version: 5, clientId: 'none' })
    expect(ack.properties?.topicAliasMaximum ?? 0).toBe(0)
    await expectDisconnect(c, aliased('a/b', 1, 'x'), 0x94)
  })

  test('[3.3.2.3.4] an empty topic with an alias that was never set is a Protocol Error: DISCONNECT 0x82', async () => {
    await using br = await startBroker()
    const { c } = await open(br.port, { version: 5, clientId: 'unknown' })
    c.send(aliased('a/b', 1, 'sets alias 1'))
    await expectDisconnect(c, aliased('', 2, 'alias 2 unknown'), 0x82)
  })

  test('[3.3.2.1] an empty topic without a Topic Alias is a Protocol Error: DISCONNECT 0x82', async () => {
    await using br = await startBroker()
    const { c } = await open(br.port, { version: 5, clientId: 'empty' })
    await expectDisconnect(c, b.publish({ topic: '', payload: 'x', version: 5 }), 0x82)
  })

  test('[MQTT-3.3.2-7] alias mappings are not carried over to a new network connection', async () => {
    await using br = await startBroker()
    const opts: b.ConnectOpts = { version: 5, clientId: 'forgets', clean: false, properties: { sessionExpiry: 60 } }
    const { c: first } = await open(br.port, opts)
    first.send(aliased('kept/topic', 1, 'x'))
    first.send(b.disconnect({ version: 5 }))
    await first.closed()
    const { c: second, ack } = await open(br.port, opts)
    expect(ack.sessionPresent).toBe(true)
    await expectDisconnect(second, aliased('', 1, 'y'), 0x82)
  })
})

/** A subscriber's view of aliases: resolves each PUBLISH as a client must. */
class AliasBook {
  #map = new Map<number, string>()
  constructor(readonly max: number) {}
  resolve(p: IPublishPacket): string {
    const alias = p.properties?.topicAlias
    if (alias === undefined) {
      expect(p.topic.length).toBeGreaterThan(0)
      return p.topic
    }
    // [MQTT-3.1.2-26] [MQTT-3.3.2-11] never above the subscriber's Topic Alias Maximum
    expect(alias).toBeGreaterThanOrEqual(1)
    expect(alias).toBeLessThanOrEqual(this.max)
    if (p.topic.length > 0) this.#map.set(alias, p.topic)
    const t = this.#map.get(alias)
    expect(t).toBeDefined()
    return t!
  }
}

describe('outbound Topic Alias (broker to subscriber)', () => {
  for (const qos of [0, 1] as const) {
    test(`[MQTT-3.1.2-26] [MQTT-3.3.2-11] QoS ${qos}: a subscriber with Topic Alias Maximum 2 gets topic + alias first, then an empty topic + the same alias, never an alias above 2`, async () => {
      await using br = await startBroker()
      await using sub = await subscriber(br.port, { version: 5, clientId: 'sub', properties: { topicAliasMaximum: 2 } }, 'feed/#', qos)
      await using pub = (await open(br.port, { version: 5, clientId: 'pub' })).c
      const topics = ['feed/a', 'feed/a', 'feed/b', 'feed/c', 'feed/d', 'feed/b', 'feed/a', 'feed/c', 'feed/a']
      for (const [i, t] of topics.entries()) pub.send(b.publish({ topic: t, payload: `p${i}`, qos, packetId: i + 1, version: 5 }))
      const book = new AliasBook(2)
      const resolved: string[] = []
      let alias: number | undefined
      for (let i = 0; i < topics.length; i++) {
        const raw = await sub.nextRaw()
        const p = sub.decode(raw) as IPublishPacket
        expect(p.cmd).toBe('publish')
        expect(p.payload.toString()).toBe(`p${i}`)
        resolved.push(book.resolve(p))
        if (qos === 1) sub.send(b.puback(p.messageId!, { version: 5 }))
        if (i === 0) {
          expect(p.topic).toBe('feed/a')
          alias = p.properties?.topicAlias
          expect(alias).toBeDefined()
        }
        if (i === 1) {
          // byte for byte: a zero-length topic name and the same alias, nothing else
          expect(raw).toEqual(b.publish({ topic: '', payload: 'p1', qos, packetId: p.messageId, version: 5, properties: { topicAlias: alias } }))
        }
      }
      expect(resolved).toEqual(topics)
      await sub.expectNothing(100)
    })
  }

  test('[MQTT-3.3.2-7] outbound aliases start afresh on a new connection: the first message carries the topic again', async () => {
    await using br = await startBroker()
    const opts: b.ConnectOpts = { version: 5, clientId: 'sub', clean: false, properties: { sessionExpiry: 60, topicAliasMaximum: 4 } }
    const first = await subscriber(br.port, opts, 'feed/#', 0)
    await using pub = (await open(br.port, { version: 5, clientId: 'pub' })).c
    pub.send(b.publish({ topic: 'feed/a', payload: 'before', version: 5 }))
    const p1 = (await first.nextOf('publish')) as IPublishPacket
    expect(p1.topic).toBe('feed/a')
    expect(p1.properties?.topicAlias).toBeDefined()
    first.send(b.disconnect({ version: 5 }))
    await first.closed()
    const { c: second, ack } = await open(br.port, opts)
    await using _second = second
    expect(ack.sessionPresent).toBe(true)
    pub.send(b.publish({ topic: 'feed/a', payload: 'after', version: 5 }))
    const p2 = (await second.nextOf('publish')) as IPublishPacket
    expect(p2.payload.toString()).toBe('after')
    expect(p2.topic).toBe('feed/a')
  })

  for (const [label, props] of [['without Topic Alias Maximum', undefined], ['with Topic Alias Maximum 0', { topicAliasMaximum: 0 }]] as const) {
    test(`[MQTT-3.1.2-27] a v5 subscriber ${label} never gets a Topic Alias`, async () => {
      await using br = await startBroker()
      await using sub = await subscriber(br.port, { version: 5, clientId: 'plain', properties: props }, 'feed/#', 1)
      await using pub = (await open(br.port, { version: 5, clientId: 'pub' })).c
      for (let i = 0; i < 6; i++) {
        pub.send(b.publish({ topic: 'feed/same', payload: `m${i}`, qos: (i % 2) as 0 | 1, packetId: i + 1, version: 5 }))
      }
      for (let i = 0; i < 6; i++) {
        const raw = await sub.nextRaw()
        const p = sub.decode(raw) as IPublishPacket
        expect(raw).toEqual(b.publish({ topic: 'feed/same', payload: `m${i}`, qos: p.qos, packetId: p.messageId, version: 5, properties: {} }))
        expect(p.qos).toBe((i % 2) as 0 | 1)
        if (p.qos === 1) sub.send(b.puback(p.messageId!, { version: 5 }))
      }
    })
  }
})

describe('MQTT.js interoperability', () => {
  test('[MQTT-3.3.2-12] [MQTT-3.1.2-26] MQTT.js clients with topicAliasMaximum exchange aliased messages end to end', async () => {
    await using br = await startBroker()
    const sub = await mqtt.connectAsync(br.url, { protocolVersion: 5, clientId: 'js-sub', reconnectPeriod: 0, properties: { topicAliasMaximum: 3 } })
    const pub = await mqtt.connectAsync(br.url, { protocolVersion: 5, clientId: 'js-pub', reconnectPeriod: 0, autoAssignTopicAlias: true })
    try {
      const sentAliases: (number | undefined)[] = []
      const sentTopics: string[] = []
      pub.on('packetsend', (p) => {
        if (p.cmd !== 'publish') return
        const pp = p as MqttJsPublish
        sentTopics.push(pp.topic.toString())
        sentAliases.push(pp.properties?.topicAlias)
      })
      const topics = ['js/a', 'js/a', 'js/b', 'js/a', 'js/b', 'js/c', 'js/d', 'js/a']
      const got: { topic: string; payload: string; wireTopic: string; alias: number | undefined }[] = []
      let done!: () => void
      const all = new Promise<void>((resolve) => { done = resolve })
      sub.on('message', (topic, payload, packet) => {
        got.push({ topic, payload: payload.toString(), wireTopic: packet.topic.toString(), alias: packet.properties?.topicAlias })
        if (got.length === topics.length) done()
      })
      await sub.subscribeAsync('js/#', { qos: 1 })
      for (const [i, t] of topics.entries()) await pub.publishAsync(t, `v${i}`, { qos: 1 })
      let timer: ReturnType<typeof setTimeout> | undefined
      await Promise.race([all, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`only ${got.length} of ${topics.length} messages arrived`)), 3000) })])
      clearTimeout(timer)
      // the publisher really used aliases towards the broker (empty topic on repeats)
      expect(sentAliases.every((a) => a !== undefined)).toBe(true)
      expect(sentTopics[1]).toBe('')
      // the subscriber got every message on its full topic, in order
      expect(got.map((g) => `${g.topic}=${g.payload}`)).toEqual(topics.map((t, i) => `${t}=v${i}`))
      // and the broker used aliases towards it, within its maximum
      expect(got[1]!.wireTopic).toBe('')
      expect(got[1]!.alias).toBe(got[0]!.alias)
      for (const g of got) if (g.alias !== undefined) expect(g.alias).toBeLessThanOrEqual(3)
    } finally {
      await Promise.all([sub.endAsync(), pub.endAsync()])
    }
  })
})

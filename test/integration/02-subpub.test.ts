/**
 * SUBSCRIBE / PUBLISH / UNSUBSCRIBE: matching, QoS grant and downgrade, overlapping
 * subscriptions, No Local, Retain As Published, v5 property pass-through.
 *
 * Absence is proven without timers: messages from one publisher arrive in order, so a
 * "sentinel" message published last marks the point by which anything else would have arrived.
 */
import { describe, expect, test } from 'bun:test'
import mqtt from 'mqtt'
import type { IPublishPacket, ISubackPacket, IUnsubackPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = 4 | 5

/** Connects and subscribes (one SUBSCRIBE), returning the client after its SUBACK. */
async function subscriber(port: number, version: V, clientId: string, subs: (b.Subscription | string)[], properties?: b.Props): Promise<RawClient> {
  const { client } = await RawClient.open(port, { version, clientId })
  client.send(b.subscribe(1, subs, { version, properties }))
  await client.nextOf('suback')
  return client
}

/** Every PUBLISH up to and including the first one on `topic`. */
async function publishesUntil(c: RawClient, topic: string): Promise<IPublishPacket[]> {
  const out: IPublishPacket[] = []
  for (;;) {
    const p = (await c.nextOf('publish')) as IPublishPacket
    out.push(p)
    if (p.topic === topic) return out
  }
}

const topics = (ps: IPublishPacket[]) => ps.map((p) => p.topic)

describe('QoS 0 publish and subscribe', () => {
  for (const protocolVersion of VERSIONS) {
    test(`[MQTT-4.5.0-1] v${protocolVersion}: MQTT.js subscriber receives a QoS 0 message from an MQTT.js publisher`, async () => {
      await using br = await startBroker()
      const sub = await mqtt.connectAsync(br.url, { protocolVersion, clientId: `js-sub-${protocolVersion}`, reconnectPeriod: 0 })
      const pub = await mqtt.connectAsync(br.url, { protocolVersion, clientId: `js-pub-${protocolVersion}`, reconnectPeriod: 0 })
      try {
        const granted = await sub.subscribeAsync('js/topic', { qos: 0 })
        expect(granted.map((g) => g.qos)).toEqual([0])
        const got = new Promise<[string, string, number]>((resolve) =>
          sub.on('message', (t, payload, packet) => resolve([t, payload.toString(), packet.qos])))
        await pub.publishAsync('js/topic', 'hello from mqtt.js', { qos: 0 })
        expect(await withTimeout(got, 2000, 'the message')).toEqual(['js/topic', 'hello from mqtt.js', 0])
      } finally {
        await Promise.all([sub.endAsync(), pub.endAsync()])
      }
    })
  }
})

describe('topic matching', () => {
  for (const version of VERSIONS) {
    test(`[MQTT-4.7.1-2] [MQTT-4.7.1-3] v${version}: + matches one level and # matches any number of levels`, async () => {
      await using br = await startBroker()
      await using sub = await subscriber(br.port, version, 'wild', ['sport/+/player', 'news/#', 'end'])
      await using pub = await RawClient.open(br.port, { version, clientId: 'pub' }).then((r) => r.client)
      for (const t of ['sport/tennis/player', 'sport/player', 'sport/a/b/player', 'news', 'news/x', 'news/x/y', 'newsroom/x', 'sport//player', 'end']) {
        pub.send(b.publish({ topic: t, payload: t, version }))
      }
      expect(topics(await publishesUntil(sub, 'end'))).toEqual(['sport/tennis/player', 'news', 'news/x', 'news/x/y', 'sport//player', 'end'])
    })

    test(`[MQTT-4.7.2-1] v${version}: topics starting with $ are not matched by filters starting with # or +`, async () => {
      await using br = await startBroker()
      await using wild = await subscriber(br.port, version, 'wild', ['#', '+/status'])
      await using dollar = await subscriber(br.port, version, 'dollar', ['$internal/#', 'end'])
      await using pub = await RawClient.open(br.port, { version, clientId: 'pub' }).then((r) => r.client)
      pub.send(b.publish({ topic: '$internal/status', payload: 'x', version }))
      pub.send(b.publish({ topic: 'device/status', payload: 'y', version }))
      pub.send(b.publish({ topic: 'end', version }))
      expect(topics(await publishesUntil(wild, 'end'))).toEqual(['device/status', 'end'])
      // a filter that names the $ level explicitly does match
      expect(topics(await publishesUntil(dollar, 'end'))).toEqual(['$internal/status', 'end'])
    })
  }
})

describe('overlapping subscriptions', () => {
  test('[MQTT-3.3.4-2] [MQTT-3.3.4-3] v5: one message with the highest granted QoS and the identifiers of both subscriptions', async () => {
    await using br = await startBroker()
    const { client: sub } = await RawClient.open(br.port, { version: 5, clientId: 'overlap' })
    await using _s = sub
    sub.send(b.subscribe(1, [{ topic: 'a/#', qos: 0 }], { version: 5, properties: { subscriptionIdentifier: 11 } }))
    await sub.nextOf('suback')
    sub.send(b.subscribe(2, [{ topic: 'a/b', qos: 2 }], { version: 5, properties: { subscriptionIdentifier: 22 } }))
    await sub.nextOf('suback')
    await using pub = await RawClient.open(br.port, { version: 5, clientId: 'pub' }).then((r) => r.client)
    pub.send(b.publish({ topic: 'a/b', payload: 'both', qos: 1, packetId: 3, version: 5 }))
    await pub.nextOf('puback')
    pub.send(b.publish({ topic: 'a/end', version: 5 }))
    const got = await publishesUntil(sub, 'a/end')
    expect(topics(got)).toEqual(['a/b', 'a/end'])
    expect(got[0]!.qos).toBe(1)
    expect(subIds(got[0]!)).toEqual([11, 22])
    expect(subIds(got[1]!)).toEqual([11])
  })

  test('[MQTT-3.3.5-1] v3.1.1: overlapping subscriptions deliver with the maximum QoS of the matching subscriptions', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, 4, 'overlap4', [{ topic: 'a/#', qos: 0 }, { topic: 'a/b', qos: 1 }])
    await using pub = await RawClient.open(br.port, { version: 4, clientId: 'pub' }).then((r) => r.client)
    pub.send(b.publish({ topic: 'a/b', payload: 'both', qos: 1, packetId: 3 }))
    await pub.nextOf('puback')
    pub.send(b.publish({ topic: 'a/end' }))
    const got = (await publishesUntil(sub, 'a/end')).filter((p) => p.topic === 'a/b')
    expect(got.length).toBeGreaterThanOrEqual(1)
    expect(Math.max(...got.map((p) => p.qos))).toBe(1)
  })
})

describe('v5 subscription options', () => {
  test('[MQTT-3.8.3-3] No Local: the publisher does not receive its own message, other subscribers do', async () => {
    await using br = await startBroker()
    await using self = await subscriber(br.port, 5, 'self', [{ topic: 'nl/t', nl: true }, 'nl/end'])
    await using other = await subscriber(br.port, 5, 'other', ['nl/t', 'nl/end'])
    self.send(b.publish({ topic: 'nl/t', payload: 'mine', version: 5 }))
    self.send(b.publish({ topic: 'nl/end', version: 5 }))
    expect(topics(await publishesUntil(self, 'nl/end'))).toEqual(['nl/end'])
    expect(topics(await publishesUntil(other, 'nl/t'))).toEqual(['nl/t'])
  })

  test('[MQTT-3.3.1-12] [MQTT-3.3.1-13] Retain As Published keeps the retain flag on live messages; without it the flag is 0', async () => {
    await using br = await startBroker()
    await using rap = await subscriber(br.port, 5, 'rap', [{ topic: 'r/t', rap: true }])
    await using plain = await subscriber(br.port, 5, 'plain', [{ topic: 'r/t' }])
    await using pub = await RawClient.open(br.port, { version: 5, clientId: 'pub' }).then((r) => r.client)
    pub.send(b.publish({ topic: 'r/t', payload: 'kept', retain: true, version: 5 }))
    pub.send(b.publish({ topic: 'r/t', payload: 'live', retain: false, version: 5 }))
    const a = await rap.nextOf('publish') as IPublishPacket
    const a2 = await rap.nextOf('publish') as IPublishPacket
    expect([a.payload.toString(), a.retain, a2.payload.toString(), a2.retain]).toEqual(['kept', true, 'live', false])
    const p = await plain.nextOf('publish') as IPublishPacket
    expect([p.payload.toString(), p.retain]).toEqual(['kept', false])
  })
})

test('[MQTT-3.3.1-9] v3.1.1: a live message matching an established subscription has RETAIN 0', async () => {
  await using br = await startBroker()
  await using sub = await subscriber(br.port, 4, 'live4', ['r/t'])
  await using pub = await RawClient.open(br.port, { version: 4, clientId: 'pub' }).then((r) => r.client)
  pub.send(b.publish({ topic: 'r/t', payload: 'retained', retain: true }))
  expect(await sub.nextRaw()).toEqual(b.publish({ topic: 'r/t', payload: 'retained', retain: false }))
})

describe('SUBACK and granted QoS', () => {
  for (const version of VERSIONS) {
    // v5: 0x8F for an invalid filter; 3.1.1: an invalid filter closes the connection (34-strict.test.ts)
    test(`[MQTT-3.8.4-6] [MQTT-3.9.3-1] v${version}: SUBACK has one code per filter in order${version === 5 ? ', 0x8F for an invalid filter' : ''}`, async () => {
      await using br = await startBroker()
      const { client: c } = await RawClient.open(br.port, { version, clientId: 'suback' })
      await using _c = c
      const bad = version === 5 ? [{ topic: 'a/#/b', qos: 1 }] : []
      c.send(b.subscribe(42, [{ topic: 'q/0', qos: 0 }, { topic: 'q/1', qos: 1 }, { topic: 'q/2', qos: 2 }, ...bad], { version }))
      expect(await c.nextRaw()).toEqual(b.suback(42, [0, 1, 2, ...(version === 5 ? [0x8f] : [])], { version }))
    })

    test(`[MQTT-3.8.4-8] v${version}: a message is delivered at the minimum of its QoS and the granted QoS`, async () => {
      await using br = await startBroker({ VMQTT_LIMITS_MAX_QOS: '1' })
      const { client: sub } = await RawClient.open(br.port, { version, clientId: 'downgrade' })
      await using _s = sub
      sub.send(b.subscribe(1, [{ topic: 'd/0', qos: 0 }, { topic: 'd/2', qos: 2 }], { version }))
      // the server grants at most its Maximum QoS
      expect(((await sub.nextOf('suback')) as ISubackPacket).granted).toEqual([0, 1])
      await using pub = await RawClient.open(br.port, { version, clientId: 'pub' }).then((r) => r.client)
      pub.send(b.publish({ topic: 'd/0', payload: 'a', qos: 1, packetId: 1, version }))
      pub.send(b.publish({ topic: 'd/2', payload: 'b', qos: 1, packetId: 2, version }))
      pub.send(b.publish({ topic: 'd/2', payload: 'c', qos: 0, version }))
      const got = await publishesUntil(sub, 'd/2').then(async (first) => [...first, ...(await publishesUntil(sub, 'd/2'))])
      expect(got.map((p) => [p.payload.toString(), p.qos])).toEqual([['a', 0], ['b', 1], ['c', 0]])
    })
  }
})

describe('UNSUBSCRIBE', () => {
  for (const version of VERSIONS) {
    test(`[MQTT-3.10.4-1] [MQTT-3.10.4-4] v${version}: UNSUBSCRIBE stops delivery${version === 5 ? '; UNSUBACK 0x11 for an unknown filter' : ''}`, async () => {
      await using br = await startBroker()
      await using sub = await subscriber(br.port, version, 'unsub', ['u/t', 'u/end'])
      sub.send(b.unsubscribe(9, ['u/t', 'never/subscribed'], { version }))
      const ack = await sub.nextRaw()
      if (version === 5) {
        expect(ack).toEqual(b.unsuback(9, { version, codes: [0x00, 0x11] }))
        expect(((sub.decode(ack)) as IUnsubackPacket).granted).toEqual([0x00, 0x11])
      } else {
        expect(ack).toEqual(b.unsuback(9))
      }
      await using pub = await RawClient.open(br.port, { version, clientId: 'pub' }).then((r) => r.client)
      pub.send(b.publish({ topic: 'u/t', payload: 'gone', version }))
      pub.send(b.publish({ topic: 'u/end', version }))
      expect(topics(await publishesUntil(sub, 'u/end'))).toEqual(['u/end'])
    })
  }
})

describe('v5 properties on delivery', () => {
  test('[MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20] user properties (in order), content type, response topic, correlation data and payload format are passed through', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, 5, 'props-sub', ['p/t'])
    await using pub = await RawClient.open(br.port, { version: 5, clientId: 'props-pub' }).then((r) => r.client)
    const userProperties: [string, string][] = [['z', '1'], ['a', '2'], ['z', '3'], ['m', ''], ['a', '2']]
    pub.send(b.publish({
      topic: 'p/t', payload: 'hello', version: 5, qos: 1, packetId: 7,
      properties: {
        userProperties, payloadFormat: 1, contentType: 'text/plain; charset=utf-8',
        responseTopic: 'p/reply', correlationData: new Uint8Array([0, 1, 0xfe, 0xff]),
      },
    }))
    await pub.nextOf('puback')
    const frame = await sub.nextRaw()
    const props = publishProps(frame)
    expect(props.filter(([id]) => id === 0x26).map(([, v]) => v)).toEqual(userProperties)
    expect(one(props, 0x01)).toBe(1)
    expect(one(props, 0x03)).toBe('text/plain; charset=utf-8')
    expect(one(props, 0x08)).toBe('p/reply')
    expect(one(props, 0x09)).toEqual(Buffer.from([0, 1, 0xfe, 0xff]))
    expect(props.some(([id]) => id === 0x0b)).toBe(false)
    expect((sub.decode(frame) as IPublishPacket).payload.toString()).toBe('hello')
  })

  test('[MQTT-3.3.4-3] a subscription identifier is sent with matching messages, and none without one', async () => {
    await using br = await startBroker()
    await using withId = await subscriber(br.port, 5, 'with-id', ['s/t'], { subscriptionIdentifier: 268_435_455 })
    await using withoutId = await subscriber(br.port, 5, 'without-id', ['s/t'])
    await using pub = await RawClient.open(br.port, { version: 5, clientId: 'pub' }).then((r) => r.client)
    pub.send(b.publish({ topic: 's/t', payload: 'x', version: 5 }))
    expect(publishProps(await withId.nextRaw())).toEqual([[0x0b, 268_435_455]])
    expect(publishProps(await withoutId.nextRaw())).toEqual([])
  })

  test('MQTT.js v5 receives user properties and correlation data published by MQTT.js', async () => {
    await using br = await startBroker()
    const sub = await mqtt.connectAsync(br.url, { protocolVersion: 5, clientId: 'js-props-sub', reconnectPeriod: 0 })
    const pub = await mqtt.connectAsync(br.url, { protocolVersion: 5, clientId: 'js-props-pub', reconnectPeriod: 0 })
    try {
      await sub.subscribeAsync('js/props', { qos: 1 })
      const got = new Promise<IPublishPacket>((resolve) => sub.on('message', (_t, _p, packet) => resolve(packet)))
      await pub.publishAsync('js/props', 'x', { qos: 1, properties: { userProperties: { k: ['v1', 'v2'] }, correlationData: Buffer.from('cid'), contentType: 'a/b' } })
      const p = await withTimeout(got, 2000, 'the message')
      expect(p.properties?.userProperties).toEqual({ k: ['v1', 'v2'] })
      expect(p.properties?.correlationData?.toString()).toBe('cid')
      expect(p.properties?.contentType).toBe('a/b')
    } finally {
      await Promise.all([sub.endAsync(), pub.endAsync()])
    }
  })
})

function subIds(p: IPublishPacket): number[] {
  const v = p.properties?.subscriptionIdentifier
  if (v === undefined) return []
  return (Array.isArray(v) ? v : [v]).sort((x, y) => x - y)
}

type PropValue = number | string | Buffer | [string, string]

function one(props: [number, PropValue][], id: number): PropValue | undefined {
  const found = props.filter(([i]) => i === id)
  if (found.length > 1) throw new Error(`property 0x${id.toString(16)} appears ${found.length} times`)
  return found[0]?.[1]
}

/**
 * The properties of a v5 PUBLISH frame as [id, value] in wire order, parsed here from the
 * spec (section 3.3.2.3) so the order of repeated properties can be checked.
 */
function publishProps(frame: Buffer): [number, PropValue][] {
  const { header, body } = b.splitFrame(frame)
  if (header >> 4 !== 3) throw new Error(`not a PUBLISH: ${frame.toString('hex')}`)
  let i = 2 + body.readUInt16BE(0)
  if (((header >> 1) & 3) > 0) i += 2
  const readVarint = (): number => {
    let n = 0
    let mult = 1
    for (;;) {
      const byte = body[i++]!
      n += (byte & 0x7f) * mult
      mult *= 128
      if ((byte & 0x80) === 0) return n
    }
  }
  const readStr = (): string => {
    const len = body.readUInt16BE(i)
    const s = body.toString('utf8', i + 2, i + 2 + len)
    i += 2 + len
    return s
  }
  const end = readVarint() + i
  const out: [number, PropValue][] = []
  while (i < end) {
    const id = body[i++]!
    switch (id) {
      case 0x01: out.push([id, body[i++]!]); break
      case 0x02: out.push([id, body.readUInt32BE(i)]); i += 4; break
      case 0x03: case 0x08: out.push([id, readStr()]); break
      case 0x09: {
        const len = body.readUInt16BE(i)
        out.push([id, Buffer.from(body.subarray(i + 2, i + 2 + len))])
        i += 2 + len
        break
      }
      case 0x0b: out.push([id, readVarint()]); break
      case 0x23: out.push([id, body.readUInt16BE(i)]); i += 2; break
      case 0x26: { const k = readStr(); out.push([id, [k, readStr()]]); break }
      default: throw new Error(`unexpected property 0x${id.toString(16)} in PUBLISH ${frame.toString('hex')}`)
    }
  }
  if (i !== end) throw new Error(`property length mismatch in ${frame.toString('hex')}`)
  return out
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms) }),
  ])
}

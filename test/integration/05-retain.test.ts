/**
 * Retained messages: store, replace, delete, delivery on subscribe, v5 Retain Handling,
 * retained message expiry and Retain Available = 0.
 *
 * Retained messages are sent right after the SUBACK; a PINGREQ sent after the SUBSCRIBE is
 * answered after them, so "everything before the PINGRESP" is the complete set, no timers.
 */
import { describe, expect, test } from 'bun:test'
import mqtt from 'mqtt'
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = 4 | 5

async function open(port: number, version: V, clientId: string): Promise<RawClient> {
  const { client, connack } = await RawClient.open(port, { version, clientId })
  const ack = connack as IConnackPacket
  const code = version === 5 ? ack.reasonCode : ack.returnCode
  if (code !== 0) { client.destroy(); throw new Error(`CONNECT of ${clientId} refused with 0x${code?.toString(16)}`) }
  return client
}

/** Publishes at QoS 1 and waits for the PUBACK, so the message is stored when this returns. */
let nextId = 1
async function publishRetained(c: RawClient, version: V, topic: string, payload: string, properties?: b.Props): Promise<void> {
  const packetId = nextId++
  c.send(b.publish({ topic, payload, qos: 1, packetId, retain: true, version, properties }))
  for (;;) {
    const p = await c.nextOf('puback')
    if (p.messageId === packetId) return
  }
}

/** Subscribes, then returns the raw PUBLISH frames that came before the PINGRESP sent after it. */
async function subscribeAndCollect(c: RawClient, version: V, subs: b.Subscription[], packetId = 1): Promise<Buffer[]> {
  c.send(b.subscribe(packetId, subs, { version }))
  c.send(b.pingreq())
  const frames: Buffer[] = []
  let subacked = false
  for (;;) {
    const f = await c.nextRaw()
    const type = f[0]! >> 4
    if (type === b.TYPE.PINGRESP) break
    if (type === b.TYPE.SUBACK) {
      const ack = c.decode(f) as ISubackPacket
      expect(ack.granted.every((g) => typeof g === 'number' && g < 0x80)).toBe(true)
      subacked = true
    } else if (type === b.TYPE.PUBLISH) frames.push(f)
    else throw new Error(`unexpected packet ${f.toString('hex')}`)
  }
  if (!subacked) throw new Error('PINGRESP came before SUBACK')
  return frames
}

const summary = (c: RawClient, frames: Buffer[]) =>
  frames.map((f) => c.decode(f) as IPublishPacket).map((p) => [p.topic, p.payload.toString(), p.retain] as const)
    .sort((x, y) => x[0].localeCompare(y[0]))

for (const version of VERSIONS) {
  describe(`v${version}`, () => {
    test('[MQTT-3.3.1-5] [MQTT-3.3.1-8] (v3.1.1 numbering) a retained message is stored and sent to a new subscriber with RETAIN 1', async () => {
      await using br = await startBroker()
      await using pub = await open(br.port, version, 'pub')
      await publishRetained(pub, version, 'ret/t', 'stored')
      await using sub = await open(br.port, version, 'sub')
      const frames = await subscribeAndCollect(sub, version, [{ topic: 'ret/t', qos: 0 }])
      expect(frames.length).toBe(1)
      // delivered at the subscription's QoS 0, RETAIN 1
      if (version === 4) expect(frames[0]).toEqual(b.publish({ topic: 'ret/t', payload: 'stored', retain: true }))
      expect(summary(sub, frames)).toEqual([['ret/t', 'stored', true]])
      expect((sub.decode(frames[0]!) as IPublishPacket).qos).toBe(0)
    })

    test('[MQTT-3.3.1-5] a new retained message replaces the old one; a non-retained one does not', async () => {
      await using br = await startBroker()
      await using pub = await open(br.port, version, 'pub')
      await publishRetained(pub, version, 'ret/t', 'one')
      await publishRetained(pub, version, 'ret/t', 'two')
      pub.send(b.publish({ topic: 'ret/t', payload: 'not retained', qos: 1, packetId: 999, version }))
      await pub.nextOf('puback')
      await using sub = await open(br.port, version, 'sub')
      expect(summary(sub, await subscribeAndCollect(sub, version, [{ topic: 'ret/t', qos: 1 }]))).toEqual([['ret/t', 'two', true]])
    })

    test('[MQTT-3.3.1-6] [MQTT-3.3.1-7] (v3.1.1 [MQTT-3.3.1-10] [MQTT-3.3.1-11]) a retained PUBLISH with an empty payload is delivered and deletes the retained message', async () => {
      await using br = await startBroker()
      await using pub = await open(br.port, version, 'pub')
      await publishRetained(pub, version, 'ret/a', 'goes')
      await publishRetained(pub, version, 'ret/b', 'stays')
      await using live = await open(br.port, version, 'live')
      expect(summary(live, await subscribeAndCollect(live, version, [{ topic: 'ret/#' }]))).toEqual([['ret/a', 'goes', true], ['ret/b', 'stays', true]])
      await publishRetained(pub, version, 'ret/a', '')
      // processed as a normal message by current subscribers
      const p = (await live.nextOf('publish')) as IPublishPacket
      expect([p.topic, p.payload.length]).toEqual(['ret/a', 0])
      await using sub = await open(br.port, version, 'sub')
      expect(summary(sub, await subscribeAndCollect(sub, version, [{ topic: 'ret/#' }]))).toEqual([['ret/b', 'stays', true]])
      expect(br.broker.store.getRetained('ret/a')).toBeUndefined()
    })

    test('[MQTT-3.3.1-6] (v5 [MQTT-3.3.1-9]) a wildcard subscription gets every matching retained message, at most at the granted QoS', async () => {
      await using br = await startBroker()
      await using pub = await open(br.port, version, 'pub')
      for (const t of ['w', 'w/1', 'w/2/x', 'other/1', 'other/1/deeper', 'wx/1']) await publishRetained(pub, version, t, t)
      await using sub = await open(br.port, version, 'sub')
      const frames = await subscribeAndCollect(sub, version, [{ topic: 'w/#', qos: 2 }, { topic: '+/1', qos: 0 }])
      expect(summary(sub, frames)).toEqual([
        ['other/1', 'other/1', true], ['w', 'w', true], ['w/1', 'w/1', true], ['w/2/x', 'w/2/x', true], ['wx/1', 'wx/1', true],
      ])
      const qos = Object.fromEntries(frames.map((f) => sub.decode(f) as IPublishPacket).map((p) => [p.topic, p.qos]))
      // published at QoS 1: w/1 matches QoS 2 and QoS 0 subscriptions, other/1 and wx/1 only QoS 0
      expect(qos).toEqual({ 'w': 1, 'w/1': 1, 'w/2/x': 1, 'other/1': 0, 'wx/1': 0 })
    })

    test('[MQTT-4.7.2-1] retained messages on $ topics are not sent for filters starting with # or +', async () => {
      await using br = await startBroker()
      await using pub = await open(br.port, version, 'pub')
      for (const t of ['$app/1', '$app/x/1', 'app/1']) await publishRetained(pub, version, t, t)
      await using wild = await open(br.port, version, 'wild')
      expect(summary(wild, await subscribeAndCollect(wild, version, [{ topic: '#' }, { topic: '+/1' }]))).toEqual([['app/1', 'app/1', true]])
      await using dollar = await open(br.port, version, 'dollar')
      expect(summary(dollar, await subscribeAndCollect(dollar, version, [{ topic: '$app/#' }]))).toEqual([
        ['$app/1', '$app/1', true], ['$app/x/1', '$app/x/1', true],
      ])
    })

    test('MQTT.js receives a retained message with the retain flag set', async () => {
      await using br = await startBroker()
      const pub = await mqtt.connectAsync(br.url, { protocolVersion: version, clientId: 'js-pub', reconnectPeriod: 0 })
      const sub = await mqtt.connectAsync(br.url, { protocolVersion: version, clientId: 'js-sub', reconnectPeriod: 0 })
      try {
        await pub.publishAsync('js/ret', 'kept', { qos: 1, retain: true })
        const got = new Promise<IPublishPacket>((resolve) => sub.on('message', (_t, _p, packet) => resolve(packet)))
        await sub.subscribeAsync('js/ret', { qos: 1 })
        const p = await withTimeout(got, 2000, 'the retained message')
        expect([p.payload.toString(), p.retain]).toEqual(['kept', true])
      } finally {
        await Promise.all([sub.endAsync(), pub.endAsync()])
      }
    })
  })
}

describe('v5 Retain Handling', () => {
  test('[MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] 0 sends on every subscribe, 1 only for a new subscription, 2 never', async () => {
    await using br = await startBroker()
    await using pub = await open(br.port, 5, 'pub')
    await publishRetained(pub, 5, 'rh/t', 'r')
    const expected: (readonly [string, string, boolean])[] = [['rh/t', 'r', true]]
    await using c0 = await open(br.port, 5, 'rh0')
    expect(summary(c0, await subscribeAndCollect(c0, 5, [{ topic: 'rh/t', rh: 0 }], 1))).toEqual(expected)
    expect(summary(c0, await subscribeAndCollect(c0, 5, [{ topic: 'rh/t', rh: 0 }], 2))).toEqual(expected)
    await using c1 = await open(br.port, 5, 'rh1')
    expect(summary(c1, await subscribeAndCollect(c1, 5, [{ topic: 'rh/t', rh: 1 }], 1))).toEqual(expected)
    expect(summary(c1, await subscribeAndCollect(c1, 5, [{ topic: 'rh/t', rh: 1 }], 2))).toEqual([])
    await using c2 = await open(br.port, 5, 'rh2')
    expect(summary(c2, await subscribeAndCollect(c2, 5, [{ topic: 'rh/t', rh: 2 }], 1))).toEqual([])
    // Retain Handling 2 still receives live messages
    pub.send(b.publish({ topic: 'rh/t', payload: 'live', version: 5 }))
    const p = (await c2.nextOf('publish')) as IPublishPacket
    expect([p.payload.toString(), p.retain]).toEqual(['live', false])
  })
})

describe('v5 retained message expiry', () => {
  test('[MQTT-3.3.2-5] [MQTT-3.3.2-6] a retained message with Message Expiry 1 s is not sent to a subscriber arriving after it expired', async () => {
    await using br = await startBroker()
    await using pub = await open(br.port, 5, 'pub')
    await publishRetained(pub, 5, 'exp/t', 'short-lived', { messageExpiry: 1 })
    const storedBy = Date.now()
    await publishRetained(pub, 5, 'exp/forever', 'long-lived')
    // before expiry it is delivered, with the remaining lifetime
    await using early = await open(br.port, 5, 'early')
    const frames = await subscribeAndCollect(early, 5, [{ topic: 'exp/#' }])
    const got = frames.map((f) => early.decode(f) as IPublishPacket).sort((x, y) => x.topic.localeCompare(y.topic))
    expect(got.map((p) => p.topic)).toEqual(['exp/forever', 'exp/t'])
    expect(got[0]!.properties?.messageExpiryInterval).toBeUndefined()
    expect(got[1]!.properties?.messageExpiryInterval).toBe(1)
    // wait on time itself: poll until the expiry instant has passed
    while (Date.now() <= storedBy + 1000) await Bun.sleep(10)
    await using late = await open(br.port, 5, 'late')
    expect(summary(late, await subscribeAndCollect(late, 5, [{ topic: 'exp/#' }]))).toEqual([['exp/forever', 'long-lived', true]])
  })
})

describe('Retain Available = 0', () => {
  test('[MQTT-3.2.2-14] v5: with VMQTT_LIMITS_RETAIN_AVAILABLE=false a PUBLISH with RETAIN 1 gets DISCONNECT 0x9A', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_RETAIN_AVAILABLE: 'false' })
    const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: 'no-retain' })
    await using _c = c
    expect((connack as IConnackPacket).properties?.retainAvailable).toBe(false)
    // a PUBLISH without RETAIN is fine
    c.send(b.publish({ topic: 'nr/t', payload: 'ok', qos: 1, packetId: 1, version: 5 }))
    expect((await c.nextOf('puback')).messageId).toBe(1)
    c.send(b.publish({ topic: 'nr/t', payload: 'no', qos: 1, packetId: 2, retain: true, version: 5 }))
    const d = (await c.next()) as IDisconnectPacket
    expect(d.cmd).toBe('disconnect')
    expect(d.reasonCode).toBe(0x9a)
    await c.closed()
    expect(br.broker.store.getRetained('nr/t')).toBeUndefined()
  })
})

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms) }),
  ])
}

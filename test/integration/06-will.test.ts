/**
 * Will messages: published on abnormal closes, keepalive timeouts and takeovers; discarded on a
 * normal DISCONNECT; retain flag, QoS and MQTT 5 will properties carried over; the MQTT 5 Will
 * Delay Interval and its interaction with session resumption and session expiry.
 */
import { describe, expect, test } from 'bun:test'
import type { IDisconnectPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { openAccepted as open } from '../helpers/open.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = (typeof VERSIONS)[number]


async function subscriber(port: number, version: V, clientId: string, topic: string, qos = 0): Promise<RawClient> {
  const { c } = await open(port, { version, clientId })
  c.send(b.subscribe(1, [{ topic, qos }], { version }))
  const ack = (await c.nextOf('suback')) as ISubackPacket
  expect(ack.granted).toEqual([qos])
  return c
}

async function nextPublish(c: RawClient, ms = 3000): Promise<IPublishPacket> {
  return (await c.nextOf('publish', ms)) as IPublishPacket
}

describe.concurrent.each(VERSIONS)('will message, MQTT version %i', (v) => {
  test('[MQTT-3.1.2-8] the will is published when the network connection is closed without DISCONNECT', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, v, 'sub', 'will/abrupt')
    const { c: w } = await open(br.port, { version: v, clientId: 'dying', will: { topic: 'will/abrupt', payload: 'gone' } })
    w.destroy()
    const p = await nextPublish(sub)
    expect(p.topic).toBe('will/abrupt')
    expect(p.payload.toString()).toBe('gone')
    expect(p.qos).toBe(0)
  })

  test('[MQTT-3.1.2-10] [MQTT-3.14.4-3] a normal DISCONNECT discards the will: not published now nor after the session resumes', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, v, 'sub', 'will/normal')
    const persistent: b.ConnectOpts = v === 5 ? { clean: false, properties: { sessionExpiry: 60 } } : { clean: false }
    const { c: w } = await open(br.port, { version: v, clientId: 'polite', ...persistent, will: { topic: 'will/normal', payload: 'gone' } })
    w.send(b.disconnect({ version: v }))
    await w.closed()
    await sub.expectNothing(250)
    // the will was removed from the session state: the next abnormal close (of a connection
    // without a will of its own) must not publish it
    const { c: again, ack } = await open(br.port, { version: v, clientId: 'polite', ...persistent })
    expect(ack.sessionPresent).toBe(true)
    again.destroy()
    await again.closed()
    await sub.expectNothing(250)
  })

  test(`${v === 5 ? '[MQTT-3.1.4-3]' : '[MQTT-3.1.4-2]'} the will of a taken-over connection is published when the new connection starts clean`, async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, v, 'sub', 'will/takeover')
    // v5: a long will delay, so that only the end of the session can publish it [MQTT-3.1.2-8]
    const will: b.WillOpts = { topic: 'will/takeover', payload: 'replaced', properties: v === 5 ? { willDelay: 60 } : undefined }
    const persistent: b.ConnectOpts = v === 5 ? { clean: false, properties: { sessionExpiry: 60 } } : { clean: false }
    await using old = (await open(br.port, { version: v, clientId: 'twin', ...persistent, will })).c
    await using fresh = (await open(br.port, { version: v, clientId: 'twin', clean: true })).c
    if (v === 5) expect(((await old.nextOf('disconnect')) as IDisconnectPacket).reasonCode).toBe(0x8e)
    await old.closed()
    const p = await nextPublish(sub)
    expect(p.topic).toBe('will/takeover')
    expect(p.payload.toString()).toBe('replaced')
  })

  test(`${v === 5 ? '[MQTT-3.1.2-15]' : '[MQTT-3.1.2-17]'} a will with Will Retain 1 is published as a retained message`, async () => {
    await using br = await startBroker()
    await using live = await subscriber(br.port, v, 'live', 'will/retained')
    const { c: w } = await open(br.port, { version: v, clientId: 'keeper', will: { topic: 'will/retained', payload: 'last words', retain: true } })
    w.destroy()
    const p = await nextPublish(live)
    expect(p.payload.toString()).toBe('last words')
    // to an established subscription the RETAIN flag is 0 ([MQTT-3.3.1-9] v3.1.1, [MQTT-3.3.1-12] v5)
    expect(p.retain).toBe(false)
    await using late = await subscriber(br.port, v, 'late', 'will/#')
    const r = await nextPublish(late)
    expect(r.topic).toBe('will/retained')
    expect(r.payload.toString()).toBe('last words')
    expect(r.retain).toBe(true)
  })

  test(`${v === 5 ? '[MQTT-3.1.2-14]' : '[MQTT-3.1.2-16]'} a will with Will Retain 0 is published as a non-retained message`, async () => {
    await using br = await startBroker()
    await using live = await subscriber(br.port, v, 'live', 'will/plain')
    const { c: w } = await open(br.port, { version: v, clientId: 'plain', will: { topic: 'will/plain', payload: 'bye', retain: false } })
    w.destroy()
    expect((await nextPublish(live)).payload.toString()).toBe('bye')
    await using late = await subscriber(br.port, v, 'late', 'will/plain')
    await late.expectNothing(200)
  })

  for (const q of [0, 1, 2]) {
    test(`${v === 5 ? '[MQTT-3.1.2-12]' : '[MQTT-3.1.2-14]'} a will with Will QoS ${q} is delivered at QoS ${q} to a QoS 2 subscriber`, async () => {
      await using br = await startBroker()
      await using sub = await subscriber(br.port, v, 'sub', 'will/qos', 2)
      const { c: w } = await open(br.port, { version: v, clientId: `qos${q}`, will: { topic: 'will/qos', payload: `q${q}`, qos: q } })
      w.destroy()
      const p = await nextPublish(sub)
      expect(p.payload.toString()).toBe(`q${q}`)
      expect(p.qos).toBe(q as 0 | 1 | 2)
      if (q > 0) expect(p.messageId).toBeGreaterThan(0)
    })
  }
})

describe.concurrent('MQTT 5 will properties and reason codes', () => {
  test('[MQTT-3.14.4-3] a DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, 5, 'sub', 'will/0x04')
    const { c: w } = await open(br.port, { version: 5, clientId: 'asks', will: { topic: 'will/0x04', payload: 'on purpose' } })
    w.send(b.disconnect({ version: 5, reason: 0x04 }))
    await w.closed()
    const p = await nextPublish(sub)
    expect(p.topic).toBe('will/0x04')
    expect(p.payload.toString()).toBe('on purpose')
  })

  test('[MQTT-3.1.3-10] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-20] will properties reach the subscriber, user properties in order', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, 5, 'sub', 'will/props')
    const userProperties: [string, string][] = [['a', '1'], ['b', '2'], ['a', '3']]
    const correlation = Buffer.from([0x00, 0xff, 0x10, 0x20])
    const { c: w } = await open(br.port, {
      version: 5, clientId: 'rich',
      will: {
        topic: 'will/props', payload: '{"ok":false}',
        properties: { payloadFormat: 1, messageExpiry: 120, contentType: 'application/json', responseTopic: 'reply/here', correlationData: correlation, userProperties },
      },
    })
    w.destroy()
    const raw = await sub.nextRaw()
    const p = sub.decode(raw) as IPublishPacket
    expect(p.cmd).toBe('publish')
    expect(p.payload.toString()).toBe('{"ok":false}')
    expect(p.properties?.contentType).toBe('application/json')
    expect(p.properties?.responseTopic).toBe('reply/here')
    expect(Buffer.from(p.properties!.correlationData!)).toEqual(correlation)
    expect(p.properties?.payloadFormatIndicator).toBe(true)
    expect(p.properties?.messageExpiryInterval).toBeGreaterThan(0)
    expect(p.properties?.messageExpiryInterval).toBeLessThanOrEqual(120)
    expect(p.properties?.userProperties).toEqual({ a: ['1', '3'], b: '2' })
    // the three 0x26 entries appear in the order the client sent them
    expect(raw.indexOf(Buffer.from(b.propertyBytes({ userProperties })))).toBeGreaterThan(0)
    // Will Delay Interval is a will property, never a PUBLISH property
    expect((p.properties as Record<string, unknown> | undefined)?.willDelayInterval).toBeUndefined()
  })
})

// The cases below wait for the broker's clock (will delay, session expiry, keepalive); they run
// concurrently, each with its own broker.
describe.concurrent('timed wills: keepalive timeout and MQTT 5 Will Delay Interval', () => {
  for (const v of VERSIONS) {
    test.concurrent(`[MQTT-3.1.2-8] v${v}: the will is published when the server closes the connection on a keepalive timeout`, async () => {
      await using br = await startBroker()
      await using sub = await subscriber(br.port, v, 'sub', 'will/keepalive')
      const t0 = Date.now()
      await using w = (await open(br.port, { version: v, clientId: 'silent', keepalive: 1, will: { topic: 'will/keepalive', payload: 'timeout' } })).c
      const p = await nextPublish(sub, 4000)
      expect(p.topic).toBe('will/keepalive')
      expect(p.payload.toString()).toBe('timeout')
      // [MQTT-3.1.2-22] (v5) / [MQTT-3.1.2-24] (v3.1.1): the close comes after 1.5 x keepalive
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1400)
      if (v === 5) expect(((await w.nextOf('disconnect')) as IDisconnectPacket).reasonCode).toBe(0x8d)
      await w.closed()
    }, 8000)
  }

  test.concurrent('[MQTT-3.1.2-8] the will is published once the Will Delay Interval (1 s) has passed', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, 5, 'sub', 'will/delayed')
    const { c: w } = await open(br.port, {
      version: 5, clientId: 'late', clean: false, properties: { sessionExpiry: 60 },
      will: { topic: 'will/delayed', payload: 'eventually', properties: { willDelay: 1 } },
    })
    const t0 = Date.now()
    w.destroy()
    await sub.expectNothing(300)
    const p = await nextPublish(sub, 3000)
    expect(p.payload.toString()).toBe('eventually')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950)
  }, 8000)

  test.concurrent('[MQTT-3.1.3-9] the will is not sent when the session is resumed before the Will Delay Interval passes', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, 5, 'sub', 'will/+')
    const delayed = (id: string, topic: string): b.ConnectOpts => ({
      version: 5, clientId: id, clean: false, properties: { sessionExpiry: 60 },
      will: { topic, payload: id, properties: { willDelay: 1 } },
    })
    const { c: a } = await open(br.port, delayed('resumer', 'will/resumer'))
    a.destroy()
    await a.closed()
    const { c: back, ack } = await open(br.port, { version: 5, clientId: 'resumer', clean: false, properties: { sessionExpiry: 60 } })
    await using _back = back
    expect(ack.sessionPresent).toBe(true)
    // a witness whose will has the same delay and goes away later: when its will arrives, the
    // resumer's delay has passed too
    const { c: witness } = await open(br.port, delayed('witness', 'will/witness'))
    witness.destroy()
    const p = await nextPublish(sub, 3000)
    expect(p.topic).toBe('will/witness')
    await sub.expectNothing(250)
  }, 8000)

  test.concurrent('[MQTT-3.1.2-8] the will is published when the session expires before the Will Delay Interval', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, 5, 'sub', 'will/expired')
    const { c: w } = await open(br.port, {
      version: 5, clientId: 'brief', clean: false, properties: { sessionExpiry: 1 },
      will: { topic: 'will/expired', payload: 'session over', properties: { willDelay: 3600 } },
    })
    const t0 = Date.now()
    w.destroy()
    const p = await nextPublish(sub, 3500)
    expect(p.payload.toString()).toBe('session over')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950)
    // the session ended with it
    const { c: again, ack } = await open(br.port, { version: 5, clientId: 'brief', clean: false, properties: { sessionExpiry: 1 } })
    await using _again = again
    expect(ack.sessionPresent).toBe(false)
  }, 8000)
})

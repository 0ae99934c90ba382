/**
 * Strict where the specification is strict (issue 13, section 7), over real sockets:
 * - MQTT 3.1.1 and 3.1: a SUBSCRIBE or UNSUBSCRIBE with an empty or invalid topic filter is a
 *   protocol violation: the connection is closed, nothing of the packet takes effect
 *   [MQTT-4.7.3-1] [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.8.0-1]; MQTT 5 answers 0x8F per filter.
 * - Control characters (U+0001-U+001F, U+007F-U+009F) in client ids, user names, will topics,
 *   topic names and filters are refused by default (v5 CONNACK 0x85 / 0x86 / 0x90, DISCONNECT
 *   0x90, SUBACK / UNSUBACK 0x8F; v3 the connection is closed without an answer), and accepted
 *   with VMQTT_LIMITS_ALLOW_CONTROL_CHARACTERS=true. Everyone else keeps being served.
 */
import { describe, expect, test } from 'bun:test'
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket, IUnsubackPacket } from 'mqtt-packet'
import { bystander } from '../helpers/bystander.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const INVALID_FILTERS = ['ab/+e', '', 'a/#/b', 'a#', '+a/b', 'a/b#']
/** U+0001, U+001F, U+007F, U+0080 and U+009F inside otherwise ordinary strings. */
const CONTROLS = ['\u0001', '\u001f', '\u007f', '\u0080', '\u009f']

/** The server closed the connection without sending anything. */
async function closedSilently(c: RawClient): Promise<void> {
  await c.closed()
  await c.expectNothing(0, { allowClose: true })
}

async function v5Disconnect(c: RawClient): Promise<number> {
  const d = (await c.nextOf('disconnect')) as IDisconnectPacket
  await c.closed()
  return d.reasonCode ?? 0
}

describe('MQTT 3.1.1 / 3.1: an invalid topic filter closes the connection', () => {
  for (const version of [3, 4] as const) {
    for (const filter of INVALID_FILTERS) {
      test(`[MQTT-4.8.0-1] v${version}: SUBSCRIBE ${JSON.stringify(filter)} closes the connection, without SUBACK`, async () => {
        await using br = await startBroker()
        await using ok = await bystander(br.port, 4)
        const { client: c } = await RawClient.open(br.port, { version, clientId: `bad-sub-${version}` })
        c.send(b.subscribe(1, [{ topic: filter, qos: 0 }], { version }))
        await closedSilently(c)
        await ok.check()
      })
    }

    test(`v${version}: nothing of a SUBSCRIBE with one invalid filter takes effect (the valid one before it is not made)`, async () => {
      await using br = await startBroker()
      const id = `half-${version}`
      const { client: c } = await RawClient.open(br.port, { version, clientId: id, clean: false })
      c.send(b.subscribe(1, [{ topic: 'ok/x', qos: 1 }, { topic: 'ab/+e', qos: 1 }], { version }))
      await closedSilently(c)
      expect(br.broker.sessions.get(id)?.getSubscription('ok/x')).toBeUndefined()
    })

    test(`[MQTT-4.8.0-1] v${version}: UNSUBSCRIBE with an invalid filter closes the connection, without UNSUBACK; the valid one before it stays`, async () => {
      await using br = await startBroker()
      const id = `bad-unsub-${version}`
      const { client: c } = await RawClient.open(br.port, { version, clientId: id, clean: false })
      c.send(b.subscribe(1, [{ topic: 'ok/x', qos: 1 }], { version }))
      await c.nextOf('suback')
      c.send(b.unsubscribe(2, ['ok/x', 'ab/+e'], { version }))
      await closedSilently(c)
      expect(br.broker.sessions.get(id)?.getSubscription('ok/x')).toBeDefined()
    })
  }
})

describe('MQTT 5: an invalid topic filter gets 0x8F and the connection stays', () => {
  test('SUBACK 0x8F for each invalid filter, the valid ones granted', async () => {
    await using br = await startBroker()
    const { client: c } = await RawClient.open(br.port, { version: 5, clientId: 'v5-bad-sub' })
    c.send(b.subscribe(1, ['ok/x', ...INVALID_FILTERS].map((topic) => ({ topic, qos: 1 })), { version: 5 }))
    expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([1, ...INVALID_FILTERS.map(() => 0x8f)])
    c.send(b.pingreq())
    expect((await c.next()).cmd).toBe('pingresp')
    await c.close()
  })

  test('UNSUBACK 0x8F for an invalid filter, 0x00 / 0x11 for valid ones', async () => {
    await using br = await startBroker()
    const { client: c } = await RawClient.open(br.port, { version: 5, clientId: 'v5-bad-unsub' })
    c.send(b.subscribe(1, [{ topic: 'ok/x', qos: 1 }], { version: 5 }))
    await c.nextOf('suback')
    c.send(b.unsubscribe(2, ['ok/x', 'ab/+e', 'never/subscribed', `a${CONTROLS[0]}`], { version: 5 }))
    expect(((await c.nextOf('unsuback')) as IUnsubackPacket).granted).toEqual([0, 0x8f, 0x11, 0x8f])
    await c.close()
  })
})

describe('control characters are refused by default', () => {
  for (const ch of CONTROLS) {
    const hex = `U+${ch.charCodeAt(0).toString(16).padStart(4, '0')}`
    test(`${hex} in a client id: v5 CONNACK 0x85; v3.1.1 and v3.1 closed without CONNACK`, async () => {
      await using br = await startBroker()
      await using ok = await bystander(br.port, 5)
      const v5 = await RawClient.open(br.port, { version: 5, clientId: `dev${ch}1` })
      expect((v5.connack as IConnackPacket).reasonCode).toBe(0x85)
      await v5.client.closed()
      for (const version of [3, 4] as const) {
        const c = await RawClient.connect(br.port, { version })
        c.send(b.connect({ version, clientId: `dev${ch}1` }))
        await closedSilently(c)
      }
      await ok.check()
    })

    test(`${hex} in a user name: v5 CONNACK 0x86; v3.1.1 closed without CONNACK`, async () => {
      await using br = await startBroker()
      const v5 = await RawClient.open(br.port, { version: 5, clientId: 'user5', username: `al${ch}ice` })
      expect((v5.connack as IConnackPacket).reasonCode).toBe(0x86)
      await v5.client.closed()
      const c = await RawClient.connect(br.port, { version: 4 })
      c.send(b.connect({ version: 4, clientId: 'user4', username: `al${ch}ice` }))
      await closedSilently(c)
    })

    test(`${hex} in a will topic: v5 CONNACK 0x90; v3.1.1 closed without CONNACK`, async () => {
      await using br = await startBroker()
      const will = { topic: `status/${ch}`, payload: 'gone' }
      const v5 = await RawClient.open(br.port, { version: 5, clientId: 'will5', will })
      expect((v5.connack as IConnackPacket).reasonCode).toBe(0x90)
      await v5.client.closed()
      const c = await RawClient.connect(br.port, { version: 4 })
      c.send(b.connect({ version: 4, clientId: 'will4', will }))
      await closedSilently(c)
    })

    test(`${hex} in a PUBLISH topic name: v5 DISCONNECT 0x90; v3.1.1 closed`, async () => {
      await using br = await startBroker()
      await using ok = await bystander(br.port, 4)
      const { client: c5 } = await RawClient.open(br.port, { version: 5, clientId: 'pub5' })
      c5.send(b.publish({ topic: `a/b${ch}c`, payload: 'x', qos: 1, packetId: 1, version: 5 }))
      expect(await v5Disconnect(c5)).toBe(0x90)
      const { client: c4 } = await RawClient.open(br.port, { version: 4, clientId: 'pub4' })
      c4.send(b.publish({ topic: `a/b${ch}c`, payload: 'x', qos: 1, packetId: 1 }))
      await closedSilently(c4)
      await ok.check()
    })

    test(`${hex} in a topic filter: v5 SUBACK 0x8F (also in a share name); v3.1.1 closed without SUBACK`, async () => {
      await using br = await startBroker()
      const { client: c5 } = await RawClient.open(br.port, { version: 5, clientId: 'sub5' })
      c5.send(b.subscribe(1, [{ topic: `a/${ch}/#`, qos: 1 }, { topic: `$share/g${ch}/a`, qos: 1 }, { topic: 'a/+', qos: 1 }], { version: 5 }))
      expect(((await c5.nextOf('suback')) as ISubackPacket).granted).toEqual([0x8f, 0x8f, 1])
      await c5.close()
      const { client: c4 } = await RawClient.open(br.port, { version: 4, clientId: 'sub4' })
      c4.send(b.subscribe(1, [{ topic: `a/${ch}/#`, qos: 1 }], { version: 4 }))
      await closedSilently(c4)
    })
  }

  test('the characters next to the ranges (U+0020, U+007E, U+00A0) are accepted', async () => {
    await using br = await startBroker()
    for (const ch of [' ', '~', '\u00a0']) {
      const { client, connack } = await RawClient.open(br.port, { version: 4, clientId: `id${ch}x`, username: `u${ch}x`, will: { topic: `w${ch}x`, payload: '' } })
      expect((connack as IConnackPacket).returnCode).toBe(0)
      client.send(b.subscribe(1, [{ topic: `t/${ch}/#`, qos: 1 }], { version: 4 }))
      expect(((await client.nextOf('suback')) as ISubackPacket).granted).toEqual([1])
      client.send(b.publish({ topic: `t/${ch}/x`, payload: 'ok', qos: 1, packetId: 2 }))
      expect(((await client.nextOf('publish')) as IPublishPacket).topic).toBe(`t/${ch}/x`)
      await client.close()
    }
  })

  test('VMQTT_LIMITS_ALLOW_CONTROL_CHARACTERS=true accepts them everywhere', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_ALLOW_CONTROL_CHARACTERS: 'true' })
    for (const version of [4, 5] as const) {
      const { client, connack } = await RawClient.open(br.port, { version, clientId: `id\u0001${version}`, username: 'u\u007f', will: { topic: 'w\u0085', payload: '' } })
      expect(version === 5 ? (connack as IConnackPacket).reasonCode : (connack as IConnackPacket).returnCode).toBe(0)
      client.send(b.subscribe(1, [{ topic: 't/\u0009/#', qos: 1 }], { version }))
      expect(((await client.nextOf('suback')) as ISubackPacket).granted).toEqual([1])
      client.send(b.publish({ topic: 't/\u0009/\u009f', payload: 'ok', qos: 1, packetId: 2, version }))
      expect(((await client.nextOf('publish')) as IPublishPacket).topic).toBe('t/\u0009/\u009f')
      client.send(b.unsubscribe(3, ['t/\u0009/#'], { version }))
      await client.nextOf('unsuback')
      await client.close()
    }
  })
})

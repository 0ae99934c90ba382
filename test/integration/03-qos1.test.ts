/**
 * QoS 1: PUBACK to the publisher, delivery with a packet identifier, redelivery with DUP after
 * a reconnect, the v5 "no matching subscribers" PUBACK, and the offline queue.
 */
import { describe, expect, test } from 'bun:test'
import mqtt from 'mqtt'
import type { IConnackPacket, IPubackPacket, IPublishPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { openAccepted, persistentConnect } from '../helpers/open.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = 4 | 5

const persistent = persistentConnect

async function open(port: number, o: b.ConnectOpts): Promise<{ client: RawClient; connack: IConnackPacket }> {
  const { c, ack } = await openAccepted(port, o)
  return { client: c, connack: ack }
}

async function subscribe(c: RawClient, version: V, filter: string, qos: number): Promise<void> {
  c.send(b.subscribe(1, [{ topic: filter, qos }], { version }))
  await c.nextOf('suback')
}

for (const version of VERSIONS) {
  describe(`v${version}`, () => {
    test('[MQTT-4.3.2-4] the publisher gets a PUBACK with its packet identifier', async () => {
      await using br = await startBroker()
      const { client: sub } = await open(br.port, { version, clientId: 'sub' })
      await using _s = sub
      await subscribe(sub, version, 'q1/t', 1)
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      pub.send(b.publish({ topic: 'q1/t', payload: 'x', qos: 1, packetId: 0x1234, version }))
      const frame = await pub.nextRaw()
      if (version === 4) expect(frame).toEqual(b.puback(0x1234))
      const ack = pub.decode(frame) as IPubackPacket
      expect(ack.cmd).toBe('puback')
      expect(ack.messageId).toBe(0x1234)
      expect(ack.reasonCode ?? 0).toBe(0)
    })

    test('[MQTT-4.3.2-1] [MQTT-4.3.2-2] the subscriber gets a QoS 1 PUBLISH with a non-zero packet identifier and DUP 0', async () => {
      await using br = await startBroker()
      const { client: sub } = await open(br.port, { version, clientId: 'sub' })
      await using _s = sub
      await subscribe(sub, version, 'q1/t', 1)
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      pub.send(b.publish({ topic: 'q1/t', payload: 'one', qos: 1, packetId: 1, version }))
      pub.send(b.publish({ topic: 'q1/t', payload: 'two', qos: 1, packetId: 2, version }))
      const p1 = (await sub.nextOf('publish')) as IPublishPacket
      const p2 = (await sub.nextOf('publish')) as IPublishPacket
      expect([p1.payload.toString(), p1.qos, p1.dup]).toEqual(['one', 1, false])
      expect([p2.payload.toString(), p2.qos, p2.dup]).toEqual(['two', 1, false])
      expect(p1.messageId).toBeGreaterThan(0)
      expect(p2.messageId).toBeGreaterThan(0)
      // [MQTT-2.2.1-3] two unacknowledged messages never share a packet identifier
      expect(p2.messageId).not.toBe(p1.messageId)
      sub.send(b.puback(p1.messageId!, { version }))
      sub.send(b.puback(p2.messageId!, { version }))
      sub.send(b.pingreq())
      await sub.nextOf('pingresp')
      expect(br.broker.sessions.get('sub')?.inflight.size).toBe(0)
    })

    test('[MQTT-4.4.0-1] an unacknowledged QoS 1 message is resent with DUP 1 and the same packet identifier on reconnect', async () => {
      await using br = await startBroker()
      const { client: sub1 } = await open(br.port, persistent(version, 'resend'))
      await using _s1 = sub1
      await subscribe(sub1, version, 'q1/r', 1)
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      pub.send(b.publish({ topic: 'q1/r', payload: 'must arrive', qos: 1, packetId: 5, version }))
      await pub.nextOf('puback')
      const first = (await sub1.nextOf('publish')) as IPublishPacket
      expect(first.dup).toBe(false)
      // the subscriber goes away without PUBACK
      sub1.destroy()
      await sub1.closed()
      const { client: sub2, connack } = await open(br.port, persistent(version, 'resend'))
      await using _s2 = sub2
      expect(connack.sessionPresent).toBe(true)
      const again = (await sub2.nextOf('publish')) as IPublishPacket
      expect(again.dup).toBe(true)
      expect(again.messageId).toBe(first.messageId!)
      expect(again.qos).toBe(1)
      expect(again.topic).toBe('q1/r')
      expect(again.payload.toString()).toBe('must arrive')
      // once acknowledged it is not sent again
      sub2.send(b.puback(again.messageId!, { version }))
      sub2.send(b.disconnect())
      await sub2.closed()
      const { client: sub3 } = await open(br.port, persistent(version, 'resend'))
      await using _s3 = sub3
      await sub3.expectNothing(200)
    })

    test('[MQTT-3.1.2-5] QoS 1 messages for an offline persistent session are delivered on reconnect, in order', async () => {
      await using br = await startBroker()
      const { client: sub1 } = await open(br.port, persistent(version, 'offline'))
      await using _s1 = sub1
      await subscribe(sub1, version, 'q1/o/#', 1)
      sub1.send(b.disconnect())
      await sub1.closed()
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      const payloads = ['m0', 'm1', 'm2', 'm3', 'm4']
      for (const [i, payload] of payloads.entries()) {
        pub.send(b.publish({ topic: `q1/o/${i % 2}`, payload, qos: 1, packetId: i + 1, version }))
        const ack = (await pub.nextOf('puback')) as IPubackPacket
        expect(ack.messageId).toBe(i + 1)
        // v5: the persistent session counts as a matching subscriber
        expect(ack.reasonCode ?? 0).toBe(0)
      }
      const { client: sub2, connack } = await open(br.port, persistent(version, 'offline'))
      await using _s2 = sub2
      expect(connack.sessionPresent).toBe(true)
      const got: IPublishPacket[] = []
      for (let i = 0; i < payloads.length; i++) {
        const p = (await sub2.nextOf('publish')) as IPublishPacket
        got.push(p)
        sub2.send(b.puback(p.messageId!, { version }))
      }
      expect(got.map((p) => p.payload.toString())).toEqual(payloads)
      expect(got.every((p) => p.qos === 1 && p.messageId! > 0)).toBe(true)
      expect(new Set(got.map((p) => p.messageId)).size).toBe(payloads.length)
      await sub2.expectNothing(200)
    })

    test('[MQTT-4.3.2-4] MQTT.js publishes and receives at QoS 1', async () => {
      await using br = await startBroker()
      const sub = await mqtt.connectAsync(br.url, { protocolVersion: version, clientId: 'js-sub', reconnectPeriod: 0 })
      const pub = await mqtt.connectAsync(br.url, { protocolVersion: version, clientId: 'js-pub', reconnectPeriod: 0 })
      try {
        await sub.subscribeAsync('js/q1', { qos: 1 })
        const got = new Promise<IPublishPacket>((resolve) => sub.on('message', (_t, _p, packet) => resolve(packet)))
        // publishAsync resolves when the PUBACK arrives
        await pub.publishAsync('js/q1', 'at least once', { qos: 1 })
        const p = await withTimeout(got, 2000, 'the message')
        expect([p.payload.toString(), p.qos]).toEqual(['at least once', 1])
      } finally {
        await Promise.all([sub.endAsync(), pub.endAsync()])
      }
    })
  })
}

test('v5: PUBACK reason 0x10 (No matching subscribers) when nobody subscribes, 0x00 when someone does', async () => {
  await using br = await startBroker()
  const { client: pub } = await open(br.port, { version: 5, clientId: 'pub' })
  await using _p = pub
  pub.send(b.publish({ topic: 'nobody/here', payload: 'x', qos: 1, packetId: 3, version: 5 }))
  const ack = (await pub.nextOf('puback')) as IPubackPacket
  expect(ack.messageId).toBe(3)
  expect(ack.reasonCode).toBe(0x10)
  const { client: sub } = await open(br.port, { version: 5, clientId: 'sub' })
  await using _s = sub
  await subscribe(sub, 5, 'nobody/here', 1)
  pub.send(b.publish({ topic: 'nobody/here', payload: 'x', qos: 1, packetId: 4, version: 5 }))
  const ack2 = (await pub.nextOf('puback')) as IPubackPacket
  expect(ack2.messageId).toBe(4)
  expect(ack2.reasonCode ?? 0).toBe(0)
})

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms) }),
  ])
}

/**
 * QoS 2: the PUBLISH / PUBREC / PUBREL / PUBCOMP exchange in both directions, exactly-once
 * delivery of a resent PUBLISH, PUBREL for an unknown id, and PUBREL resent after reconnect.
 */
import { describe, expect, test } from 'bun:test'
import mqtt from 'mqtt'
import type { IConnackPacket, IPublishPacket, Packet } from 'mqtt-packet'
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

async function subscribe(c: RawClient, version: V, filters: string[], qos: number): Promise<void> {
  c.send(b.subscribe(1, filters.map((topic) => ({ topic, qos })), { version }))
  await c.nextOf('suback')
}

/** The next packet must be `cmd` for `id`; v3.1.1 frames are compared byte for byte with `bytes`. */
async function expectAck(c: RawClient, version: V, cmd: Packet['cmd'], id: number, bytes: Buffer, reason = 0): Promise<void> {
  const frame = await c.nextRaw()
  if (version === 4) expect(frame).toEqual(bytes)
  const p = c.decode(frame) as Packet & { messageId?: number; reasonCode?: number }
  expect(p.cmd).toBe(cmd)
  expect(p.messageId).toBe(id)
  expect(p.reasonCode ?? 0).toBe(reason)
}

for (const version of VERSIONS) {
  describe(`v${version}`, () => {
    test('[MQTT-4.3.3-2] [MQTT-4.3.3-4] [MQTT-4.3.3-8] [MQTT-4.3.3-11] the full QoS 2 exchange runs in both directions', async () => {
      await using br = await startBroker()
      const { client: sub } = await open(br.port, { version, clientId: 'sub' })
      await using _s = sub
      await subscribe(sub, version, ['q2/t'], 2)
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      // inbound: the broker is the receiver
      pub.send(b.publish({ topic: 'q2/t', payload: 'exactly once', qos: 2, packetId: 0x0102, version }))
      await expectAck(pub, version, 'pubrec', 0x0102, b.pubrec(0x0102))
      pub.send(b.pubrel(0x0102, { version }))
      await expectAck(pub, version, 'pubcomp', 0x0102, b.pubcomp(0x0102))
      // outbound: the broker is the sender
      const p = (await sub.nextOf('publish')) as IPublishPacket
      expect([p.topic, p.payload.toString(), p.qos, p.dup]).toEqual(['q2/t', 'exactly once', 2, false])
      expect(p.messageId).toBeGreaterThan(0)
      sub.send(b.pubrec(p.messageId!, { version }))
      await expectAck(sub, version, 'pubrel', p.messageId!, b.pubrel(p.messageId!))
      sub.send(b.pubcomp(p.messageId!, { version }))
      sub.send(b.pingreq())
      expect(await sub.nextRaw()).toEqual(b.pingresp())
      expect(br.broker.sessions.get('sub')?.inflight.size).toBe(0)
    })

    test('[MQTT-4.3.3-10] (v3.1.1 [MQTT-4.3.3-2]) a QoS 2 PUBLISH resent with the same id before PUBREL is delivered only once', async () => {
      await using br = await startBroker()
      const { client: sub } = await open(br.port, { version, clientId: 'sub' })
      await using _s = sub
      await subscribe(sub, version, ['q2/d', 'q2/end'], 0)
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      pub.send(b.publish({ topic: 'q2/d', payload: 'once', qos: 2, packetId: 7, version }))
      await expectAck(pub, version, 'pubrec', 7, b.pubrec(7))
      pub.send(b.publish({ topic: 'q2/d', payload: 'once', qos: 2, packetId: 7, dup: true, version }))
      await expectAck(pub, version, 'pubrec', 7, b.pubrec(7))
      pub.send(b.pubrel(7, { version }))
      await expectAck(pub, version, 'pubcomp', 7, b.pubcomp(7))
      // after PUBCOMP the id is free again: a PUBLISH with it is a new message [MQTT-4.3.3-12]
      pub.send(b.publish({ topic: 'q2/d', payload: 'new', qos: 2, packetId: 7, version }))
      await expectAck(pub, version, 'pubrec', 7, b.pubrec(7))
      pub.send(b.publish({ topic: 'q2/end', version }))
      const got: string[] = []
      for (;;) {
        const p = (await sub.nextOf('publish')) as IPublishPacket
        if (p.topic === 'q2/end') break
        got.push(p.payload.toString())
      }
      expect(got).toEqual(['once', 'new'])
    })

    test('[MQTT-4.3.3-10] [MQTT-4.4.0-1] a publisher that reconnects and resends its QoS 2 PUBLISH before PUBREL causes no duplicate', async () => {
      await using br = await startBroker()
      const { client: sub } = await open(br.port, { version, clientId: 'sub' })
      await using _s = sub
      await subscribe(sub, version, ['q2/p', 'q2/end'], 0)
      const { client: pub1 } = await open(br.port, persistent(version, 'q2-pub'))
      await using _p1 = pub1
      pub1.send(b.publish({ topic: 'q2/p', payload: 'once', qos: 2, packetId: 9, version }))
      await expectAck(pub1, version, 'pubrec', 9, b.pubrec(9))
      pub1.destroy()
      await pub1.closed()
      const { client: pub2, connack } = await open(br.port, persistent(version, 'q2-pub'))
      await using _p2 = pub2
      expect(connack.sessionPresent).toBe(true)
      pub2.send(b.publish({ topic: 'q2/p', payload: 'once', qos: 2, packetId: 9, dup: true, version }))
      await expectAck(pub2, version, 'pubrec', 9, b.pubrec(9))
      pub2.send(b.pubrel(9, { version }))
      // the id is still known after the reconnect: PUBCOMP with success
      await expectAck(pub2, version, 'pubcomp', 9, b.pubcomp(9))
      pub2.send(b.publish({ topic: 'q2/end', version }))
      const got: string[] = []
      for (;;) {
        const p = (await sub.nextOf('publish')) as IPublishPacket
        if (p.topic === 'q2/end') break
        got.push(p.payload.toString())
      }
      expect(got).toEqual(['once'])
    })

    test(`[MQTT-4.3.3-11] PUBREL for an unknown packet identifier gets PUBCOMP${version === 5 ? ' with reason 0x92' : ''}`, async () => {
      await using br = await startBroker()
      const { client: c } = await open(br.port, { version, clientId: 'stray' })
      await using _c = c
      c.send(b.pubrel(0x4242, { version }))
      await expectAck(c, version, 'pubcomp', 0x4242, b.pubcomp(0x4242), version === 5 ? 0x92 : 0)
      // the connection stays open
      c.send(b.pingreq())
      expect(await c.nextRaw()).toEqual(b.pingresp())
    })

    test('[MQTT-4.4.0-1] after a reconnect the broker resends PUBREL (not PUBLISH) when PUBREC had arrived before the disconnect', async () => {
      await using br = await startBroker()
      const { client: sub1 } = await open(br.port, persistent(version, 'q2-resume'))
      await using _s1 = sub1
      await subscribe(sub1, version, ['q2/r'], 2)
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      pub.send(b.publish({ topic: 'q2/r', payload: 'resume', qos: 2, packetId: 1, version }))
      await pub.nextOf('pubrec')
      const p = (await sub1.nextOf('publish')) as IPublishPacket
      sub1.send(b.pubrec(p.messageId!, { version }))
      await expectAck(sub1, version, 'pubrel', p.messageId!, b.pubrel(p.messageId!))
      // the subscriber drops the connection without PUBCOMP
      sub1.destroy()
      await sub1.closed()
      const { client: sub2, connack } = await open(br.port, persistent(version, 'q2-resume'))
      await using _s2 = sub2
      expect(connack.sessionPresent).toBe(true)
      await expectAck(sub2, version, 'pubrel', p.messageId!, b.pubrel(p.messageId!))
      sub2.send(b.pubcomp(p.messageId!, { version }))
      await sub2.expectNothing(200)
      sub2.send(b.disconnect())
      await sub2.closed()
      // completed: nothing is resent on the next resumption
      const { client: sub3 } = await open(br.port, persistent(version, 'q2-resume'))
      await using _s3 = sub3
      await sub3.expectNothing(200)
    })

    test('[MQTT-4.4.0-1] a QoS 2 PUBLISH without PUBREC is resent with DUP 1 and the same id after a reconnect', async () => {
      await using br = await startBroker()
      const { client: sub1 } = await open(br.port, persistent(version, 'q2-dup'))
      await using _s1 = sub1
      await subscribe(sub1, version, ['q2/dup'], 2)
      const { client: pub } = await open(br.port, { version, clientId: 'pub' })
      await using _p = pub
      pub.send(b.publish({ topic: 'q2/dup', payload: 'again', qos: 2, packetId: 1, version }))
      const first = (await sub1.nextOf('publish')) as IPublishPacket
      sub1.destroy()
      await sub1.closed()
      const { client: sub2 } = await open(br.port, persistent(version, 'q2-dup'))
      await using _s2 = sub2
      const again = (await sub2.nextOf('publish')) as IPublishPacket
      expect([again.dup, again.messageId, again.qos, again.payload.toString()]).toEqual([true, first.messageId, 2, 'again'])
    })

    test('[MQTT-4.3.3-1] MQTT.js publishes and receives at QoS 2', async () => {
      await using br = await startBroker()
      const sub = await mqtt.connectAsync(br.url, { protocolVersion: version, clientId: 'js-sub', reconnectPeriod: 0 })
      const pub = await mqtt.connectAsync(br.url, { protocolVersion: version, clientId: 'js-pub', reconnectPeriod: 0 })
      try {
        await sub.subscribeAsync('js/q2', { qos: 2 })
        const got = new Promise<IPublishPacket>((resolve) => sub.on('message', (_t, _p, packet) => resolve(packet)))
        // publishAsync resolves when the PUBCOMP arrives
        await pub.publishAsync('js/q2', 'exactly once', { qos: 2 })
        const p = await withTimeout(got, 2000, 'the message')
        expect([p.payload.toString(), p.qos]).toEqual(['exactly once', 2])
      } finally {
        await Promise.all([sub.endAsync(), pub.endAsync()])
      }
    })
  })
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms) }),
  ])
}

describe('packet identifier in use (v5)', () => {
  test('a QoS 1 PUBLISH reusing the id of a QoS 2 flow awaiting PUBREL gets PUBACK 0x91 and is not delivered', async () => {
    await using broker = await startBroker()
    const { client: sub } = await RawClient.open(broker.port, { version: 5, clientId: 'inuse-sub' })
    sub.send(b.subscribe(1, [{ topic: 'inuse/#', qos: 1 }], { version: 5 }))
    await sub.nextOf('suback')
    const { client: pub } = await RawClient.open(broker.port, { version: 5, clientId: 'inuse-pub' })
    pub.send(b.publish({ version: 5, topic: 'inuse/a', qos: 2, packetId: 7, payload: 'two' }))
    expect((await pub.nextOf('pubrec')).messageId).toBe(7)
    expect(((await sub.nextOf('publish')) as { payload: Buffer }).payload.toString()).toBe('two')
    pub.send(b.publish({ version: 5, topic: 'inuse/a', qos: 1, packetId: 7, payload: 'one' }))
    const ack = (await pub.nextOf('puback')) as { messageId: number; reasonCode: number }
    expect(ack.messageId).toBe(7)
    expect(ack.reasonCode).toBe(0x91)
    await sub.expectNothing(200)
    await sub.close()
    await pub.close()
  })
})

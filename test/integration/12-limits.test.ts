/**
 * Configured limits: maximum packet size, topic length and levels, retained message count.
 * A client that breaks a limit loses only its own connection; a well-behaved bystander keeps
 * getting its messages every time.
 */
import { describe, expect, test } from 'bun:test'
import type { Packet } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { bystander } from '../helpers/bystander.ts'

type V = 4 | 5
const PACKET_TOO_LARGE = 0x95
const TOPIC_NAME_INVALID = 0x90
const TOPIC_FILTER_INVALID = 0x8f

/** v5: DISCONNECT with `reason` then close; v3.1.1: close without any packet. */
async function expectClosedWith(c: RawClient, version: V, reason: number): Promise<void> {
  if (version === 5) {
    const d = await c.next()
    expect(d.cmd === 'disconnect' ? d.reasonCode : d.cmd).toBe(reason)
  }
  await c.closed()
  await expect(c.next(100)).rejects.toThrow(/closed/)
}

const reasonOf = (p: Packet): number | string => (p.cmd === 'disconnect' ? (p.reasonCode ?? 0) : p.cmd)

describe.each([4, 5] as const)('MQTT v%d', (version) => {
  test('limits.maxSubscriptions: a new subscription beyond it gets SUBACK 0x97 (v3 0x80); replacing one still works', async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_MAX_SUBSCRIPTIONS: '3' })
    const { client } = await RawClient.open(broker.port, { version, clientId: 'many-subs' })
    try {
      client.send(b.subscribe(1, [{ topic: 'a', qos: 0 }, { topic: 'b', qos: 0 }, { topic: 'c', qos: 0 }, { topic: 'd', qos: 1 }], { version }))
      const ack = await client.nextOf('suback')
      expect(ack.cmd === 'suback' ? ack.granted : ack.cmd).toEqual([0, 0, 0, version === 5 ? 0x97 : 0x80])
      client.send(b.subscribe(2, [{ topic: 'a', qos: 1 }], { version }))
      const again = await client.nextOf('suback')
      expect(again.cmd === 'suback' ? again.granted : again.cmd).toEqual([1])
    } finally {
      client.destroy()
    }
  })

  describe('limits.maxPacketSize (VMQTT_LIMITS_MAX_PACKET_SIZE=128)', () => {
    const env = { VMQTT_LIMITS_MAX_PACKET_SIZE: '128' }

    test('[MQTT-3.1.2-24] a PUBLISH larger than the maximum closes the connection (v5: DISCONNECT 0x95)', async () => {
      await using broker = await startBroker(env)
      await using ok = await bystander(broker.port, version)
      const { client, connack } = await RawClient.open(broker.port, { version, clientId: 'big' })
      try {
        // v5 announces the limit in CONNACK
        if (version === 5) expect(connack.cmd === 'connack' ? connack.properties?.maximumPacketSize : -1).toBe(128)
        client.send(b.publish({ topic: 'big/t', payload: 'x'.repeat(200), version }))
        await expectClosedWith(client, version, PACKET_TOO_LARGE)
      } finally {
        client.destroy()
      }
      await ok.check()
    })

    test('a packet of exactly the maximum size is accepted and delivered', async () => {
      await using broker = await startBroker(env)
      const { client } = await RawClient.open(broker.port, { version, clientId: 'exact' })
      try {
        client.send(b.subscribe(1, [{ topic: 'exact/t', qos: 0 }], { version }))
        await client.nextOf('suback')
        const empty = b.publish({ topic: 'exact/t', payload: '', version })
        // 128 - overhead, keeping the remaining length in one byte (<= 127)
        const payload = 'y'.repeat(128 - empty.length)
        const frame = b.publish({ topic: 'exact/t', payload, version })
        expect(frame.length).toBe(128)
        client.send(frame)
        const p = await client.nextOf('publish')
        expect(p.cmd === 'publish' ? p.payload.toString() : p.cmd).toBe(payload)
        // one byte more is refused
        client.send(b.publish({ topic: 'exact/t', payload: `${payload}y`, version }))
        await expectClosedWith(client, version, PACKET_TOO_LARGE)
      } finally {
        client.destroy()
      }
    })

    test('[MQTT-3.1.2-24] the broker refuses as soon as the length header announces a too-large packet, without the body', async () => {
      await using broker = await startBroker(env)
      await using ok = await bystander(broker.port, version)
      const { client } = await RawClient.open(broker.port, { version, clientId: 'header-only' })
      try {
        // fixed header of a PUBLISH announcing 268,435,455 bytes; no body follows
        client.send([0x30, 0xff, 0xff, 0xff, 0x7f])
        await expectClosedWith(client, version, PACKET_TOO_LARGE)
      } finally {
        client.destroy()
      }
      await ok.check()
    })

    test('a length header announcing 129 bytes is refused before the body arrives', async () => {
      await using broker = await startBroker(env)
      const { client } = await RawClient.open(broker.port, { version, clientId: 'header-129' })
      try {
        // total = 1 (type) + 1 (length byte) + 127 = 129 > 128: send only the header and two body bytes
        client.send([0x30, ...b.varint(127), 0x00, 0x03])
        await expectClosedWith(client, version, PACKET_TOO_LARGE)
      } finally {
        client.destroy()
      }
    })
  })

  describe('limits.maxTopicLength=16 and limits.maxTopicLevels=3', () => {
    const env = { VMQTT_LIMITS_MAX_TOPIC_LENGTH: '16', VMQTT_LIMITS_MAX_TOPIC_LEVELS: '3' }
    const failure = version === 5 ? TOPIC_FILTER_INVALID : 0x80

    test('a topic name at the limits (16 bytes, 3 levels) is accepted and delivered', async () => {
      await using broker = await startBroker(env)
      const { client } = await RawClient.open(broker.port, { version, clientId: 'at-limit' })
      try {
        const topic = 'aaaa/bbbbb/cccc' + 'd' // 16 bytes, 3 levels
        expect(topic.length).toBe(16)
        client.send(b.subscribe(1, [{ topic, qos: 1 }], { version }))
        expect((await client.nextOf('suback')).cmd === 'suback').toBe(true)
        client.send(b.publish({ topic, payload: 'fits', qos: 1, packetId: 2, version }))
        const p = await client.nextOf('publish')
        expect(p.cmd === 'publish' ? `${p.topic} ${p.payload.toString()}` : p.cmd).toBe(`${topic} fits`)
      } finally {
        await client.close()
      }
    })

    for (const [what, topic] of [['longer than 16 bytes', 'abcdefghijklmnopq'], ['more than 3 levels', 'a/b/c/d']] as const) {
      test(`PUBLISH to a topic ${what} closes the connection (v5: DISCONNECT 0x90)`, async () => {
        await using broker = await startBroker(env)
        await using ok = await bystander(broker.port, version)
        const { client } = await RawClient.open(broker.port, { version, clientId: 'long-pub' })
        try {
          client.send(b.publish({ topic, payload: 'x', version }))
          await expectClosedWith(client, version, TOPIC_NAME_INVALID)
        } finally {
          client.destroy()
        }
        await ok.check()
      })

      test(`SUBSCRIBE to a filter ${what} gets a failure code in SUBACK; the other filters are granted`, async () => {
        await using broker = await startBroker(env)
        await using ok = await bystander(broker.port, version)
        const { client } = await RawClient.open(broker.port, { version, clientId: 'long-sub' })
        try {
          client.send(b.subscribe(3, [{ topic, qos: 1 }, { topic: 'fine/+', qos: 1 }], { version }))
          const ack = await client.nextOf('suback')
          expect(ack.cmd === 'suback' ? [ack.messageId, ...ack.granted] : ack.cmd).toEqual([3, failure, 1])
          // the connection stays usable and the granted filter works
          client.send(b.publish({ topic: 'fine/x', payload: 'yes', version }))
          const p = await client.nextOf('publish')
          expect(p.cmd === 'publish' ? p.topic : p.cmd).toBe('fine/x')
        } finally {
          await client.close()
        }
        await ok.check()
      })
    }

    test('a too-long filter with wildcards ("+/+/+/#") is refused by level count', async () => {
      await using broker = await startBroker(env)
      const { client } = await RawClient.open(broker.port, { version, clientId: 'wild-sub' })
      try {
        client.send(b.subscribe(4, [{ topic: '+/+/+/#', qos: 0 }, { topic: '+/+/#', qos: 0 }], { version }))
        const ack = await client.nextOf('suback')
        expect(ack.cmd === 'suback' ? ack.granted : ack.cmd).toEqual([failure, 0])
      } finally {
        await client.close()
      }
    })
  })

  describe('limits.maxRetainedMessages=2', () => {
    const env = { VMQTT_LIMITS_MAX_RETAINED_MESSAGES: '2' }

    /** Subscribes a fresh client to r/# and returns the retained messages it gets, sorted. */
    async function retainedSeen(port: number, id: string, expected: number): Promise<string[]> {
      const { client } = await RawClient.open(port, { version, clientId: id })
      try {
        client.send(b.subscribe(1, [{ topic: 'r/#', qos: 0 }], { version }))
        await client.nextOf('suback')
        const got: string[] = []
        for (let i = 0; i < expected; i++) {
          const p = await client.nextOf('publish')
          if (p.cmd === 'publish') got.push(`${p.topic}=${p.payload.toString()}${p.retain ? '' : ' (no retain flag)'}`)
        }
        await client.expectNothing(200)
        return got.sort()
      } finally {
        await client.close()
      }
    }

    test('a third retained topic is not stored; replacing and deleting existing ones still works', async () => {
      await using broker = await startBroker(env)
      await using ok = await bystander(broker.port, version)
      const { client: pub } = await RawClient.open(broker.port, { version, clientId: 'retainer' })
      try {
        let id = 0
        const put = async (topic: string, payload: string) => {
          pub.send(b.publish({ topic, payload, qos: 1, retain: true, packetId: ++id, version }))
          const ack = await pub.nextOf('puback')
          expect(ack.messageId).toBe(id)
          // the publication itself is accepted (only the retention is skipped)
          if (version === 5) expect(ack.cmd === 'puback' ? ack.reasonCode ?? 0 : -1).toBeLessThan(0x80)
        }
        await put('r/1', 'one')
        await put('r/2', 'two')
        await put('r/3', 'three')
        expect(await retainedSeen(broker.port, 'look-1', 2)).toEqual(['r/1=one', 'r/2=two'])
        // a new value for a topic that is already retained replaces it even at the limit
        await put('r/2', 'two-b')
        expect(await retainedSeen(broker.port, 'look-2', 2)).toEqual(['r/1=one', 'r/2=two-b'])
        // deleting one (empty payload) frees a slot for a new topic
        await put('r/1', '')
        await put('r/3', 'three')
        expect(await retainedSeen(broker.port, 'look-3', 2)).toEqual(['r/2=two-b', 'r/3=three'])
      } finally {
        await pub.close()
      }
      await ok.check()
    })

    test('the retained limit does not stop delivery of the message to current subscribers', async () => {
      await using broker = await startBroker(env)
      const { client } = await RawClient.open(broker.port, { version, clientId: 'live' })
      try {
        client.send(b.subscribe(1, [{ topic: 'r/#', qos: 0 }], { version }))
        await client.nextOf('suback')
        for (const t of ['r/a', 'r/b', 'r/c']) client.send(b.publish({ topic: t, payload: t, retain: true, version }))
        const got: string[] = []
        for (let i = 0; i < 3; i++) {
          const p = await client.nextOf('publish')
          if (p.cmd === 'publish') got.push(p.payload.toString())
        }
        expect(got).toEqual(['r/a', 'r/b', 'r/c'])
      } finally {
        await client.close()
      }
    })
  })

  test('a violation by one client leaves the other connections of the broker untouched', async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_MAX_PACKET_SIZE: '128', VMQTT_LIMITS_MAX_TOPIC_LEVELS: '3' })
    await using ok1 = await bystander(broker.port, version)
    await using ok2 = await bystander(broker.port, version === 5 ? 4 : 5)
    const offenders = await Promise.all([0, 1, 2].map((i) => RawClient.open(broker.port, { version, clientId: `bad-${i}` })))
    try {
      offenders[0]!.client.send([0x30, 0xff, 0xff, 0xff, 0x7f])
      offenders[1]!.client.send(b.publish({ topic: 'a/b/c/d', version }))
      offenders[2]!.client.send(b.publish({ topic: 'x', payload: 'z'.repeat(300), version }))
      const reasons = await Promise.all(offenders.map(async ({ client }) => {
        const r = version === 5 ? reasonOf(await client.next()) : 'closed'
        await client.closed()
        return r
      }))
      expect(reasons).toEqual(version === 5 ? [PACKET_TOO_LARGE, TOPIC_NAME_INVALID, PACKET_TOO_LARGE] : ['closed', 'closed', 'closed'])
      await ok1.check()
      await ok2.check()
      await ok1.check()
    } finally {
      for (const o of offenders) o.client.destroy()
    }
  })
})

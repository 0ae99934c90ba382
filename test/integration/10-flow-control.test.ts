/**
 * Flow control: the subscriber's Receive Maximum and the broker's inflight cap on what the
 * broker sends, the broker's Receive Maximum on what a client sends, the subscriber's Maximum
 * Packet Size, and the broker's Maximum QoS.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IDisconnectPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { openAccepted as open } from '../helpers/open.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = (typeof VERSIONS)[number]


async function subscriber(port: number, o: b.ConnectOpts, filter: string, qos: number, granted = qos): Promise<RawClient> {
  const { c } = await open(port, o)
  c.send(b.subscribe(1, [{ topic: filter, qos }], { version: o.version }))
  expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([granted])
  return c
}

/** Publishes and waits for PUBACK / PUBREC (then completes QoS 2), so the message is routed. */
async function publishAcked(c: RawClient, v: V, topic: string, payload: string | Buffer, qos: 1 | 2, id: number): Promise<void> {
  c.send(b.publish({ topic, payload, qos, packetId: id, version: v }))
  expect((await c.nextOf(qos === 1 ? 'puback' : 'pubrec')).messageId).toBe(id)
  if (qos === 2) {
    c.send(b.pubrel(id, { version: v }))
    expect((await c.nextOf('pubcomp')).messageId).toBe(id)
  }
}

async function nextPublish(c: RawClient): Promise<IPublishPacket> {
  const p = await c.next()
  if (p.cmd !== 'publish') throw new Error(`expected PUBLISH, got ${p.cmd}`)
  return p
}

/**
 * Checks a window of 2 for QoS 1: two messages arrive, nothing more until one is acknowledged,
 * then exactly one more per PUBACK, in order.
 */
async function checkWindowOfTwoQos1(port: number, v: V, subOpts: b.ConnectOpts): Promise<void> {
  await using sub = await subscriber(port, subOpts, 'flow/#', 1)
  await using pub = (await open(port, { version: v, clientId: 'pub' })).c
  for (let i = 1; i <= 5; i++) await publishAcked(pub, v, 'flow/x', `m${i}`, 1, i)
  const m1 = await nextPublish(sub)
  const m2 = await nextPublish(sub)
  expect([m1.payload.toString(), m2.payload.toString()]).toEqual(['m1', 'm2'])
  await sub.expectNothing(250)
  // [MQTT-4.9.0-3] other packets are still answered while the quota is zero
  sub.send(b.pingreq())
  expect((await sub.next()).cmd).toBe('pingresp')
  const order = [m1, m2]
  for (let i = 3; i <= 5; i++) {
    sub.send(b.puback(order.shift()!.messageId!, { version: v }))
    const m = await nextPublish(sub)
    expect(m.payload.toString()).toBe(`m${i}`)
    order.push(m)
    await sub.expectNothing(100)
  }
  for (const m of order) sub.send(b.puback(m.messageId!, { version: v }))
  await sub.expectNothing(100)
}

describe.concurrent('Receive Maximum of the subscriber and the broker inflight cap', () => {
  test('[MQTT-3.3.4-9] [MQTT-4.9.0-2] a subscriber with Receive Maximum 2 has at most 2 unacknowledged QoS 1 messages; each PUBACK releases one more', async () => {
    await using br = await startBroker()
    await checkWindowOfTwoQos1(br.port, 5, { version: 5, clientId: 'sub', properties: { receiveMaximum: 2 } })
  })

  test('[MQTT-3.3.4-9] QoS 2: PUBREC does not free a slot, PUBCOMP does, and so does a PUBREC with a reason code >= 0x80', async () => {
    await using br = await startBroker()
    await using sub = await subscriber(br.port, { version: 5, clientId: 'sub', properties: { receiveMaximum: 2 } }, 'flow/#', 2)
    await using pub = (await open(br.port, { version: 5, clientId: 'pub' })).c
    for (let i = 1; i <= 4; i++) await publishAcked(pub, 5, 'flow/x', `m${i}`, 2, i)
    const m1 = await nextPublish(sub)
    const m2 = await nextPublish(sub)
    expect([m1.payload.toString(), m2.payload.toString()]).toEqual(['m1', 'm2'])
    sub.send(b.pubrec(m1.messageId!, { version: 5 }))
    const rel = await sub.next()
    expect(rel.cmd).toBe('pubrel')
    expect(rel.messageId).toBe(m1.messageId)
    // m1 still counts: PUBREL is outstanding
    await sub.expectNothing(250)
    sub.send(b.pubcomp(m1.messageId!, { version: 5 }))
    const m3 = await nextPublish(sub)
    expect(m3.payload.toString()).toBe('m3')
    await sub.expectNothing(100)
    // a failed PUBREC ends the flow and frees the slot, with no PUBREL
    sub.send(b.pubrec(m2.messageId!, { version: 5, reason: 0x80 }))
    const m4 = await nextPublish(sub)
    expect(m4.payload.toString()).toBe('m4')
    for (const m of [m3, m4]) sub.send(b.pubrec(m.messageId!, { version: 5, reason: 0x80 }))
    await sub.expectNothing(100)
  })

  for (const v of VERSIONS) {
    test(`[MQTT-4.9.0-2] v${v}: VMQTT_LIMITS_MAX_INFLIGHT=2 caps the unacknowledged QoS 1 messages sent to a subscriber`, async () => {
      await using br = await startBroker({ VMQTT_LIMITS_MAX_INFLIGHT: '2' })
      await checkWindowOfTwoQos1(br.port, v, { version: v, clientId: 'sub' })
    })
  }

  test('[MQTT-3.3.4-9] the smaller of the subscriber Receive Maximum and VMQTT_LIMITS_MAX_INFLIGHT applies', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_MAX_INFLIGHT: '2' })
    await checkWindowOfTwoQos1(br.port, 5, { version: 5, clientId: 'sub', properties: { receiveMaximum: 10 } })
  })
})

describe('Receive Maximum of the broker (VMQTT_LIMITS_RECEIVE_MAXIMUM=2)', () => {
  const env = { VMQTT_LIMITS_RECEIVE_MAXIMUM: '2' }

  test('[MQTT-3.3.4-7] a client with more unacknowledged QoS 2 PUBLISH packets than the announced Receive Maximum gets DISCONNECT 0x93', async () => {
    await using br = await startBroker(env)
    const { c, ack } = await open(br.port, { version: 5, clientId: 'greedy' })
    expect(ack.properties?.receiveMaximum).toBe(2)
    for (const id of [1, 2]) {
      c.send(b.publish({ topic: 'in/x', payload: `q${id}`, qos: 2, packetId: id, version: 5 }))
      expect((await c.nextOf('pubrec')).messageId).toBe(id)
    }
    c.send(b.publish({ topic: 'in/x', payload: 'q3', qos: 2, packetId: 3, version: 5 }))
    const d = (await c.nextOf('disconnect')) as IDisconnectPacket
    expect(d.reasonCode).toBe(0x93)
    await c.closed()
  })

  test('[MQTT-3.3.4-7] completing a QoS 2 flow (PUBREL / PUBCOMP) frees its slot; a resent PUBLISH does not take a new one', async () => {
    await using br = await startBroker(env)
    await using sub = await subscriber(br.port, { version: 5, clientId: 'sub' }, 'in/#', 0)
    await using c = (await open(br.port, { version: 5, clientId: 'steady' })).c
    for (const id of [1, 2]) {
      c.send(b.publish({ topic: 'in/x', payload: `q${id}`, qos: 2, packetId: id, version: 5 }))
      expect((await c.nextOf('pubrec')).messageId).toBe(id)
    }
    // [MQTT-4.3.3-10] a resent PUBLISH with a pending id is acknowledged again, not counted again
    c.send(b.publish({ topic: 'in/x', payload: 'q1', qos: 2, packetId: 1, dup: true, version: 5 }))
    expect((await c.nextOf('pubrec')).messageId).toBe(1)
    c.send(b.pubrel(1, { version: 5 }))
    expect((await c.nextOf('pubcomp')).messageId).toBe(1)
    c.send(b.publish({ topic: 'in/x', payload: 'q3', qos: 2, packetId: 3, version: 5 }))
    expect((await c.nextOf('pubrec')).messageId).toBe(3)
    const seen: string[] = []
    for (let i = 0; i < 3; i++) seen.push((await nextPublish(sub)).payload.toString())
    expect(seen).toEqual(['q1', 'q2', 'q3'])
    await sub.expectNothing(150)
    expect(c.isClosed).toBe(false)
  })
})

describe('Maximum Packet Size of the subscriber', () => {
  for (const qos of [0, 1] as const) {
    test(`[MQTT-3.1.2-24] [MQTT-3.1.2-25] QoS ${qos}: a message larger than a subscriber's Maximum Packet Size is not sent to it, but to the others`, async () => {
      await using br = await startBroker()
      // Receive Maximum 1: a discarded QoS 1 message must not keep the only slot busy
      await using small = await subscriber(br.port, { version: 5, clientId: 'small', properties: { maximumPacketSize: 64, receiveMaximum: 1 } }, 'size/#', qos)
      await using large = await subscriber(br.port, { version: 5, clientId: 'large' }, 'size/#', qos)
      await using v4 = await subscriber(br.port, { version: 4, clientId: 'v4' }, 'size/#', qos)
      await using pub = (await open(br.port, { version: 5, clientId: 'pub' })).c
      const big = Buffer.alloc(200, 0x61)
      await publishAcked(pub, 5, 'size/x', big, 1, 1)
      await publishAcked(pub, 5, 'size/x', 'tiny', 1, 2)
      for (const c of [large, v4]) {
        const p1 = await nextPublish(c)
        expect(p1.payload.length).toBe(200)
        const p2 = await nextPublish(c)
        expect(p2.payload.toString()).toBe('tiny')
      }
      const raw = await small.nextRaw()
      expect(raw.length).toBeLessThanOrEqual(64)
      const p = small.decode(raw) as IPublishPacket
      expect(p.cmd).toBe('publish')
      expect(p.payload.toString()).toBe('tiny')
      if (qos === 1) small.send(b.puback(p.messageId!, { version: 5 }))
      await small.expectNothing(150)
    })
  }
})

describe('Maximum QoS of the broker (VMQTT_LIMITS_MAX_QOS=1)', () => {
  const env = { VMQTT_LIMITS_MAX_QOS: '1' }

  test('[MQTT-3.2.2-9] CONNACK announces Maximum QoS 1, and a v5 client publishing at QoS 2 gets DISCONNECT 0x9B', async () => {
    await using br = await startBroker(env)
    await using sub = await subscriber(br.port, { version: 5, clientId: 'sub' }, 'qos/#', 1)
    const { c, ack } = await open(br.port, { version: 5, clientId: 'too-high' })
    expect(ack.properties?.maximumQoS).toBe(1)
    c.send(b.publish({ topic: 'qos/x', payload: 'q2', qos: 2, packetId: 1, version: 5 }))
    const d = (await c.nextOf('disconnect')) as IDisconnectPacket
    expect(d.reasonCode).toBe(0x9b)
    await c.closed()
    // and the message was not delivered
    await sub.expectNothing(200)
  })

  for (const v of VERSIONS) {
    test(`[MQTT-3.2.2-10] [MQTT-3.8.4-8] v${v}: a SUBSCRIBE at QoS 2 is accepted, granted QoS 1, and messages arrive at QoS 1`, async () => {
      await using br = await startBroker(env)
      await using sub = await subscriber(br.port, { version: v, clientId: 'sub' }, 'qos/#', 2, 1)
      await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
      await publishAcked(pub, v, 'qos/x', 'hello', 1, 1)
      const p = await nextPublish(sub)
      expect(p.qos).toBe(1)
      expect(p.payload.toString()).toBe('hello')
      sub.send(b.puback(p.messageId!, { version: v }))
    })
  }
})

describe('Receive Maximum with the durable store (PUBREC waits for the commit)', () => {
  test('[MQTT-3.3.4-7] as many QoS 2 PUBLISH as the Receive Maximum, sent in one write, are all accepted; one more is 0x93', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmqtt-rm-'))
    try {
      await using br = await startBroker({ VMQTT_LIMITS_RECEIVE_MAXIMUM: '2', VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: dir })
      const { c } = await open(br.port, { version: 5, clientId: 'burst' })
      c.send(Buffer.concat([1, 2].map((id) => b.publish({ topic: 'rm/x', payload: `q${id}`, qos: 2, packetId: id, version: 5 }))))
      expect((await c.nextOf('pubrec')).messageId).toBe(1)
      expect((await c.nextOf('pubrec')).messageId).toBe(2)
      c.send(b.publish({ topic: 'rm/x', payload: 'q3', qos: 2, packetId: 3, version: 5 }))
      expect(((await c.nextOf('disconnect')) as IDisconnectPacket).reasonCode).toBe(0x93)
      await c.closed()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

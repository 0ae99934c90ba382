/**
 * MQTT 5 Message Expiry Interval (spec 3.3.2.3.3).
 *
 * Time has to pass for a message to expire. No sleep is used for that: the broker runs with
 * VMQTT_SYS_INTERVAL=1 and the publisher also subscribes to $SYS/broker/uptime, so the broker's
 * own once-a-second publications are the clock. They come on the publisher's connection after
 * its PUBACKs, so two of them prove that more than one second has passed since the broker
 * received the messages.
 */
import { describe, expect, test } from 'bun:test'
import type { IPublishPacket, Packet } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker, type TestBroker } from '../helpers/start-broker.ts'

const ENV = { VMQTT_SYS_INTERVAL: '1' }
const UPTIME = '$SYS/broker/uptime'

/** A v5 publisher that is also subscribed to the broker's uptime ticks. */
async function publisherWithClock(tb: TestBroker, clientId: string) {
  const { client } = await RawClient.open(tb.port, { version: 5, clientId })
  client.send(b.subscribe(1, [{ topic: UPTIME, qos: 0 }], { version: 5 }))
  await client.nextOf('suback')
  let id = 0
  return {
    client,
    /** Publishes QoS 1 and waits for its PUBACK. */
    async publish(topic: string, payload: string, opts: { expiry?: number; retain?: boolean } = {}): Promise<void> {
      const packetId = ++id
      const properties = opts.expiry !== undefined ? { messageExpiry: opts.expiry } : undefined
      client.send(b.publish({ topic, payload, qos: 1, packetId, retain: opts.retain, version: 5, properties }))
      const ack = await client.nextOf('puback')
      expect(ack.messageId).toBe(packetId)
    },
    /** Waits for n live uptime publications (retained copies are skipped). */
    async ticks(n: number): Promise<void> {
      for (let seen = 0; seen < n;) {
        const p = await client.nextOf('publish', 2500).catch((e: Error) => { throw new Error(`waiting for a $SYS tick: ${e.message}`) })
        if (p.cmd === 'publish' && p.topic === UPTIME && !p.retain) seen++
      }
    },
  }
}

/** Connects with a persistent session (v5: Session Expiry 60 s; v3.1.1: clean session 0). */
function openPersistent(tb: TestBroker, version: 4 | 5, clientId: string) {
  return RawClient.open(tb.port, { version, clientId, clean: false, properties: version === 5 ? { sessionExpiry: 60 } : undefined })
}

/** Creates an offline persistent session subscribed to `filter` at QoS 1. */
async function offlineSession(tb: TestBroker, version: 4 | 5, clientId: string, filter: string): Promise<void> {
  const { client } = await openPersistent(tb, version, clientId)
  client.send(b.subscribe(1, [{ topic: filter, qos: 1 }], { version }))
  await client.nextOf('suback')
  client.send(b.disconnect({ version }))
  // the broker closes the connection after DISCONNECT: from then on the session is offline
  await client.closed()
}

const expiryOf = (p: IPublishPacket): number | undefined => p.properties?.messageExpiryInterval

function asPublish(p: Packet): IPublishPacket {
  if (p.cmd !== 'publish') throw new Error(`expected PUBLISH, got ${p.cmd}`)
  return p
}

describe('Message Expiry Interval', () => {
  test.concurrent('[MQTT-3.3.2-5] a queued message whose expiry has passed is not delivered when the session resumes', async () => {
    await using tb = await startBroker(ENV)
    await offlineSession(tb, 5, 'exp-off-5', 'exp/q')
    await offlineSession(tb, 4, 'exp-off-4', 'exp/q')
    const pub = await publisherWithClock(tb, 'exp-pub-a')
    try {
      await pub.publish('exp/q', 'stale', { expiry: 1 })
      await pub.publish('exp/q', 'fresh')
      await pub.publish('exp/retained', 'stale-retained', { expiry: 1, retain: true })
      await pub.ticks(2)
      for (const version of [5, 4] as const) {
        const { client, connack } = await openPersistent(tb, version, `exp-off-${version}`)
        try {
          expect(connack.cmd === 'connack' && connack.sessionPresent).toBe(true)
          // 'stale' was queued first: the first message delivered must be 'fresh'
          const p = asPublish(await client.nextOf('publish'))
          expect(`${p.topic} ${p.payload.toString()}`).toBe('exp/q fresh')
          expect(p.qos).toBe(1)
          client.send(b.puback(p.messageId!, { version }))
          await client.expectNothing(200)
        } finally {
          await client.close()
        }
      }
      // the retained copy has expired as well: a new subscriber does not get it
      const { client: late } = await RawClient.open(tb.port, { version: 5, clientId: 'exp-late-a' })
      try {
        late.send(b.subscribe(1, [{ topic: 'exp/retained', qos: 1 }], { version: 5 }))
        await late.nextOf('suback')
        await late.expectNothing(200)
      } finally {
        await late.close()
      }
    } finally {
      await pub.client.close()
    }
  }, 10_000)

  test.concurrent('[MQTT-3.3.2-6] a message delivered after waiting in a queue carries the decremented Message Expiry Interval', async () => {
    await using tb = await startBroker(ENV)
    await offlineSession(tb, 5, 'exp-dec', 'exp/d')
    const pub = await publisherWithClock(tb, 'exp-pub-b')
    try {
      await pub.publish('exp/d', 'waited', { expiry: 10 })
      await pub.publish('exp/d-retained', 'kept', { expiry: 10, retain: true })
      await pub.ticks(2)
      const { client, connack } = await openPersistent(tb, 5, 'exp-dec')
      try {
        expect(connack.cmd === 'connack' && connack.sessionPresent).toBe(true)
        const p = asPublish(await client.nextOf('publish'))
        expect(p.payload.toString()).toBe('waited')
        // more than one second passed in the queue: 10 minus the elapsed time, rounded up
        expect(expiryOf(p)).toBeLessThanOrEqual(9)
        expect(expiryOf(p)).toBeGreaterThanOrEqual(6)
        client.send(b.puback(p.messageId!, { version: 5 }))
        // a retained message also carries the time it has left
        client.send(b.subscribe(2, [{ topic: 'exp/d-retained', qos: 1 }], { version: 5 }))
        await client.nextOf('suback')
        const r = asPublish(await client.nextOf('publish'))
        expect(r.retain).toBe(true)
        expect(r.payload.toString()).toBe('kept')
        expect(expiryOf(r)).toBeLessThanOrEqual(9)
        expect(expiryOf(r)).toBeGreaterThanOrEqual(6)
        client.send(b.puback(r.messageId!, { version: 5 }))
      } finally {
        await client.close()
      }
    } finally {
      await pub.client.close()
    }
  }, 10_000)

  test.concurrent('[MQTT-3.3.2-6] a message delivered at once keeps its Message Expiry Interval (never more than sent)', async () => {
    await using tb = await startBroker(ENV)
    const { client: sub } = await RawClient.open(tb.port, { version: 5, clientId: 'exp-live' })
    const { client: pub } = await RawClient.open(tb.port, { version: 5, clientId: 'exp-live-pub' })
    try {
      sub.send(b.subscribe(1, [{ topic: 'exp/live/#', qos: 1 }], { version: 5 }))
      await sub.nextOf('suback')
      pub.send(b.publish({ topic: 'exp/live/1', payload: 'q1', qos: 1, packetId: 1, version: 5, properties: { messageExpiry: 30 } }))
      pub.send(b.publish({ topic: 'exp/live/0', payload: 'q0', qos: 0, version: 5, properties: { messageExpiry: 45 } }))
      pub.send(b.publish({ topic: 'exp/live/none', payload: 'none', qos: 1, packetId: 2, version: 5 }))
      const got = new Map<string, IPublishPacket>()
      for (let i = 0; i < 3; i++) {
        const p = asPublish(await sub.nextOf('publish'))
        got.set(p.payload.toString(), p)
        if (p.qos > 0) sub.send(b.puback(p.messageId!, { version: 5 }))
      }
      expect(expiryOf(got.get('q1')!)).toBeLessThanOrEqual(30)
      expect(expiryOf(got.get('q1')!)).toBeGreaterThanOrEqual(29)
      expect(expiryOf(got.get('q0')!)).toBeLessThanOrEqual(45)
      expect(expiryOf(got.get('q0')!)).toBeGreaterThanOrEqual(44)
      // a message published without the property is delivered without it
      expect(expiryOf(got.get('none')!)).toBeUndefined()
    } finally {
      await sub.close()
      await pub.close()
    }
  }, 10_000)

  test.concurrent('a message with an expiry is delivered to a v3.1.1 subscriber without properties', async () => {
    await using tb = await startBroker(ENV)
    const { client: sub } = await RawClient.open(tb.port, { version: 4, clientId: 'exp-v4' })
    const { client: pub } = await RawClient.open(tb.port, { version: 5, clientId: 'exp-v4-pub' })
    try {
      sub.send(b.subscribe(1, [{ topic: 'exp/v4', qos: 1 }], { version: 4 }))
      await sub.nextOf('suback')
      pub.send(b.publish({ topic: 'exp/v4', payload: 'hello', qos: 1, packetId: 1, version: 5, properties: { messageExpiry: 30 } }))
      const raw = await sub.nextRaw()
      const packetId = asPublish(sub.decode(raw)).messageId
      // exact v3.1.1 frame: no property block
      expect(raw.toString('hex')).toBe(b.publish({ topic: 'exp/v4', payload: 'hello', qos: 1, packetId, version: 4 }).toString('hex'))
    } finally {
      await sub.close()
      await pub.close()
    }
  }, 10_000)
})

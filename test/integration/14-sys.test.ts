/**
 * $SYS topics (VMQTT_SYS_INTERVAL=1): the broker publishes its statistics under $SYS/broker/,
 * wildcard filters at the first level never match them [MQTT-4.7.2-1], and values change.
 */
import { describe, expect, test } from 'bun:test'
import type { IPublishPacket } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const SYS_ENV = { VMQTT_SYS_INTERVAL: '1' }

const REQUIRED = [
  '$SYS/broker/version',
  '$SYS/broker/uptime',
  '$SYS/broker/clients/connected',
  '$SYS/broker/subscriptions/count',
  '$SYS/broker/retained messages/count',
  '$SYS/broker/messages/received',
  '$SYS/broker/messages/sent',
  '$SYS/broker/bytes/received',
  '$SYS/broker/bytes/sent',
]

/** Reads PUBLISH packets until pred accepts one (other packets and publishes are skipped). */
async function until(c: RawClient, pred: (p: IPublishPacket) => boolean, what: string, ms = 4000): Promise<IPublishPacket> {
  const deadline = Date.now() + ms
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) throw new Error(`timed out waiting for ${what}`)
    const p = await c.nextOf('publish', left).catch((e: Error) => { throw new Error(`waiting for ${what}: ${e.message}`) })
    if (p.cmd === 'publish' && pred(p)) return p
  }
}

const num = (p: IPublishPacket): number => Number.parseInt(p.payload.toString(), 10)

describe.each([4, 5] as const)('MQTT v%d', (version) => {
  test.concurrent('a client cannot publish to $SYS/ (v5 PUBACK 0x87, v3 acknowledged and dropped); nor retain there', async () => {
    await using broker = await startBroker()
    const { client: sub } = await RawClient.open(broker.port, { version, clientId: 'sys-watch' })
    const { client: pub } = await RawClient.open(broker.port, { version, clientId: 'sys-spoof' })
    try {
      sub.send(b.subscribe(1, [{ topic: '$SYS/#', qos: 0 }], { version }))
      await sub.nextOf('suback')
      pub.send(b.publish({ topic: '$SYS/broker/version', payload: 'spoofed', qos: 1, packetId: 1, retain: true, version }))
      const ack = await pub.nextOf('puback')
      expect(ack.cmd === 'puback' ? (ack.reasonCode ?? 0) : -1).toBe(version === 5 ? 0x87 : 0)
      pub.send(b.publish({ topic: '$SYS', payload: 'spoofed', version }))
      await sub.expectNothing(150)
      expect(broker.broker.store.getRetained('$SYS/broker/version')).toBeUndefined()
    } finally {
      sub.destroy()
      pub.destroy()
    }
  })

  test.concurrent('a subscriber to $SYS/# receives the broker statistics topics', async () => {
    await using broker = await startBroker(SYS_ENV)
    const { client } = await RawClient.open(broker.port, { version, clientId: 'sys-all' })
    try {
      client.send(b.subscribe(1, [{ topic: '$SYS/#', qos: 0 }], { version }))
      const ack = await client.nextOf('suback')
      expect(ack.cmd === 'suback' ? ack.granted : ack.cmd).toEqual([0])
      const seen = new Map<string, string>()
      await until(client, (p) => {
        seen.set(p.topic, p.payload.toString())
        return REQUIRED.every((t) => seen.has(t))
      }, `all of ${REQUIRED.join(', ')}`)
      expect(seen.get('$SYS/broker/version')).toMatch(/^vmqtt \d+\.\d+\.\d+/)
      expect(seen.get('$SYS/broker/uptime')).toMatch(/^\d+ seconds$/)
      for (const t of REQUIRED.slice(2)) expect(seen.get(t), t).toMatch(/^\d+$/)
    } finally {
      await client.close()
    }
  }, 10_000)

  test.concurrent('$SYS values are current: clients/connected and subscriptions/count count this client', async () => {
    await using broker = await startBroker(SYS_ENV)
    const { client } = await RawClient.open(broker.port, { version, clientId: 'sys-count' })
    try {
      client.send(b.subscribe(1, [{ topic: '$SYS/broker/clients/connected', qos: 0 }, { topic: '$SYS/broker/subscriptions/count', qos: 0 }], { version }))
      await client.nextOf('suback')
      // the next live (non-retained) publication was computed after this client subscribed
      const conn = await until(client, (p) => !p.retain && p.topic === '$SYS/broker/clients/connected', 'a live clients/connected')
      const subs = await until(client, (p) => !p.retain && p.topic === '$SYS/broker/subscriptions/count', 'a live subscriptions/count')
      expect(num(conn)).toBe(1)
      expect(num(subs)).toBe(2)
    } finally {
      await client.close()
    }
  }, 10_000)

  test.concurrent('[MQTT-4.7.2-1] a subscriber to "#" or "+/broker/uptime" does not receive $SYS topics', async () => {
    await using broker = await startBroker(SYS_ENV)
    const { client: wild } = await RawClient.open(broker.port, { version, clientId: 'sys-wild' })
    const { client: sys } = await RawClient.open(broker.port, { version, clientId: 'sys-watch' })
    try {
      wild.send(b.subscribe(1, [{ topic: '#', qos: 0 }, { topic: '+/broker/uptime', qos: 0 }, { topic: '+/#', qos: 0 }], { version }))
      expect((await wild.nextOf('suback')).cmd).toBe('suback')
      sys.send(b.subscribe(1, [{ topic: '$SYS/broker/uptime', qos: 0 }], { version }))
      await sys.nextOf('suback')
      // a live publication reached the $SYS subscriber: the wildcard one got nothing at all
      // (neither the retained $SYS messages at subscribe time nor the live ones)
      await until(sys, (p) => !p.retain, 'a live $SYS publication')
      await wild.expectNothing(200)
      // non-$SYS topics still reach the '#' subscriber (the test can fail the other way)
      sys.send(b.publish({ topic: 'plain/topic', payload: 'p', version }))
      const p = await wild.nextOf('publish')
      expect(p.cmd === 'publish' ? p.topic : p.cmd).toBe('plain/topic')
    } finally {
      await wild.close()
      await sys.close()
    }
  }, 10_000)

  test.concurrent('messages/received grows after publishing', async () => {
    await using broker = await startBroker(SYS_ENV)
    const { client } = await RawClient.open(broker.port, { version, clientId: 'sys-grow' })
    try {
      client.send(b.subscribe(1, [{ topic: '$SYS/broker/messages/received', qos: 0 }, { topic: '$SYS/broker/uptime', qos: 0 }], { version }))
      await client.nextOf('suback')
      const before = num(await until(client, (p) => p.topic === '$SYS/broker/messages/received', 'messages/received'))
      for (let i = 1; i <= 3; i++) {
        client.send(b.publish({ topic: 'count/me', payload: String(i), qos: 1, packetId: i, version }))
        await client.nextOf('puback')
      }
      let liveUptime = ''
      const after = await until(client, (p) => {
        if (!p.retain && p.topic === '$SYS/broker/uptime') liveUptime = p.payload.toString()
        return p.topic === '$SYS/broker/messages/received' && num(p) >= before + 3
      }, `messages/received >= ${before + 3}`)
      expect(after.retain).toBe(false)
      // uptime is published with every interval as well
      expect(liveUptime).toMatch(/^\d+ seconds$/)
    } finally {
      await client.close()
    }
  }, 10_000)
})

test('with VMQTT_SYS_INTERVAL=0 (the test default) no $SYS topics are published', async () => {
  await using broker = await startBroker()
  const { client } = await RawClient.open(broker.port, { version: 5, clientId: 'sys-off' })
  try {
    client.send(b.subscribe(1, [{ topic: '$SYS/#', qos: 0 }], { version: 5 }))
    await client.nextOf('suback')
    await client.expectNothing(300)
  } finally {
    await client.close()
  }
})

/**
 * The memory budget's counters (limits.memory, src/broker/memory.ts) stay true: what clients
 * made the broker hold is taken off again once they are gone, offline queues cannot lock
 * everyone out, and a relief pass closes only as many connections as it needs.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet'
import { bystander } from '../helpers/bystander.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

const small = Buffer.alloc(16 * 1024, 0x61)
const payload = Buffer.alloc(64 * 1024, 0x61)
const MiB = 1024 * 1024

describe('memory accounting', () => {
  test('persistent QoS 1 subscribers that vanish while their output waits for the group commit: afterwards nothing counts (memory.used 0)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmqtt-mem-'))
    try {
      await using tb = await startBroker({ VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: dir, VMQTT_DATA_COMMIT_INTERVAL: '50', VMQTT_LIMITS_MAX_INFLIGHT: '65535' })
      const mem = tb.broker.memory
      const { client: pub } = await RawClient.open(tb.port, { version: 4, clientId: 'leak-pub' })
      let stop = false
      let id = 0
      const flood = (async () => {
        while (!stop) {
          for (let i = 0; i < 20; i++) { id = id % 65000 + 1; pub.send(b.publish({ topic: 'leak/t', payload: small, qos: 1, packetId: id, version: 4 })) }
          for (let i = 0; i < 20; i++) await pub.nextOf('puback', 5000)
        }
      })()
      for (let round = 0; round < 4; round++) {
        const subs = await Promise.all(Array.from({ length: 8 }, async (_, k) => {
          const { client } = await RawClient.open(tb.port, { version: 4, clientId: `leak-sub-${round}-${k}`, clean: false })
          client.send(b.subscribe(1, [{ topic: 'leak/t', qos: 1 }], { version: 4 }))
          await client.nextOf('suback')
          client.pause()
          return client
        }))
        // destroyed while output to them is unsent (they do not read) and more waits for the commit
        await until('output to the subscribers to back up', () => subs.every((_, k) => (tb.broker.connectionOf(`leak-sub-${round}-${k}`)?.backlogBytes ?? 0) > 0))
        for (const s of subs) s.destroy()
        await until('the subscribers to be gone', () => subs.every((_, k) => !tb.broker.isOnline(`leak-sub-${round}-${k}`)))
      }
      stop = true
      await flood.catch(() => {})
      await pub.close()
      await until('no connection to be left', () => tb.broker.connectionCount === 0)
      tb.broker.commits.flush()
      expect({ pending: mem.pending, partial: mem.partial, used: mem.used }).toEqual({ pending: 0, partial: 0, used: 0 })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)

  test('an offline queue in memory above the budget: its oldest messages are dropped (reason memory), new clients and the queue owner get in, the owner gets the rest', async () => {
    await using tb = await startBroker({ VMQTT_LIMITS_MEMORY: '4MiB' })
    const mem = tb.broker.memory
    await using ok = await bystander(tb.port, 5)
    const { client: away } = await RawClient.open(tb.port, { version: 5, clientId: 'away', clean: false, properties: { sessionExpiry: 600 } })
    away.send(b.subscribe(1, [{ topic: 'q/t', qos: 1 }], { version: 5 }))
    await away.nextOf('suback')
    away.send(b.disconnect({ version: 5 }))
    await away.closed()
    const { client: pub } = await RawClient.open(tb.port, { version: 5, clientId: 'publisher' })
    try {
      for (let id = 1; id <= 80; id++) {
        pub.send(b.publish({ topic: 'q/t', payload: Buffer.concat([Buffer.from(`${id} `), payload]), qos: 1, packetId: id, version: 5 }))
        await pub.nextOf('puback')
      }
      // 80 x 64 KiB (5 MiB) queued: trimmed back under 3/4 of the budget
      await until('the offline queue to be trimmed', () => mem.counters.queueTrimmed > 0 && !mem.over)
      const left = tb.broker.sessions.get('away')!.queuedCount
      expect(left).toBeLessThan(80)
      expect(left).toBeGreaterThan(30)
      expect(mem.counters.queueTrimmed).toBe(80 - left)
      expect(tb.broker.drops.memory).toBe(80 - left)
      expect(tb.broker.stats.dropped).toBe(80 - left)
      expect(mem.counters.disconnected).toBe(0)
      const late = await RawClient.open(tb.port, { version: 5, clientId: 'late' })
      expect((late.connack as IConnackPacket).reasonCode).toBe(0)
      await late.client.close()
      await ok.check()
      // the owner comes back and gets the newest messages, the oldest were dropped
      const back = await RawClient.open(tb.port, { version: 5, clientId: 'away', clean: false, properties: { sessionExpiry: 0 } })
      expect((back.connack as IConnackPacket).sessionPresent).toBe(true)
      const first = await back.client.nextOf('publish') as IPublishPacket
      expect(Number.parseInt((first.payload as Buffer).subarray(0, 8).toString(), 10)).toBe(80 - left + 1)
      await back.client.close()
    } finally {
      await pub.close()
    }
  }, 30_000)

  test('consumers whose queues hold the same messages: counted once, so nobody is closed while real usage is under the budget', async () => {
    await using tb = await startBroker({ VMQTT_LIMITS_MEMORY: '16MiB', VMQTT_LIMITS_MAX_INFLIGHT: '1' })
    const mem = tb.broker.memory
    // 8 consumers that read but never acknowledge: 1 message in flight each, the rest queued
    const consumers = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
      const { client } = await RawClient.open(tb.port, { version: 5, clientId: `c${i}` })
      client.send(b.subscribe(1, [{ topic: 'os/t', qos: 1 }], { version: 5 }))
      await client.nextOf('suback')
      return client
    }))
    const { client: pub } = await RawClient.open(tb.port, { version: 5, clientId: 'os-pub' })
    try {
      for (let id = 1; id <= 40; id++) {
        pub.send(b.publish({ topic: 'os/t', payload, qos: 1, packetId: id, version: 5 }))
        await pub.nextOf('puback')
      }
      // 8 queues x 39 x 64 KiB would be 19.5 MiB (over the budget); the 39 messages are 2.5 MiB
      await until('the queues to be estimated', () => mem.queued > 0)
      expect(mem.queued).toBeLessThan(3 * MiB)
      expect(mem.queued).toBeGreaterThan(39 * payload.length)
      // then unrelated large QoS 0 traffic (incomplete packets come and go)
      const big = Buffer.alloc(512 * 1024, 0x62)
      for (let i = 0; i < 40; i++) {
        pub.send(b.publish({ topic: 'other/t', payload: big, qos: 0, version: 5 }))
        pub.send(b.frame(12, 0))
        await pub.nextOf('pingresp')
      }
      expect(mem.counters.disconnected).toBe(0)
      for (const c of consumers) expect(c.isClosed).toBe(false)
    } finally {
      for (const c of consumers) c.destroy()
      await pub.close()
    }
  }, 30_000)
})

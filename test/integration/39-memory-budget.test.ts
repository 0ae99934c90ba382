/**
 * The global memory budget (limits.memory): unsent output, incomplete packets and queued
 * messages count against it. Near it QoS 0 to slow consumers is dropped, above it the largest
 * holders are closed and new connections are refused (v5 0x89, v3 3); every action is counted
 * and logged at most once per 10 s, and a bystander keeps being served throughout.
 */
import { describe, expect, test } from 'bun:test'
import type { IConnackPacket, IDisconnectPacket } from 'mqtt-packet'
import { createAdminApp } from '../../src/admin/app.ts'
import { createLogger } from '../../src/log.ts'
import { bystander } from '../helpers/bystander.ts'
import { passwdFile } from '../helpers/passwd-file.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

const MiB = 1024 * 1024
const SERVER_BUSY = 0x89
const payload = Buffer.alloc(64 * 1024, 0x61)

/** A broker whose warn lines are collected (parsed). */
async function brokerWithLog(env: Record<string, string>) {
  const lines: Record<string, unknown>[] = []
  const log = createLogger('warn', (l) => { lines.push(JSON.parse(l) as Record<string, unknown>) })
  const tb = await startBroker(env, { log })
  return { tb, lines, count: (msg: string) => lines.filter((l) => l.msg === msg).length }
}

/** A connected client subscribed to `topic` at `qos`. */
async function subscriber(port: number, clientId: string, topic: string, qos: 0 | 1): Promise<RawClient> {
  const { client } = await RawClient.open(port, { version: 5, clientId })
  client.send(b.subscribe(1, [{ topic, qos }], { version: 5 }))
  await client.nextOf('suback')
  return client
}

describe('limits.memory', () => {
  test('non-reading subscribers: QoS 0 to them is dropped first (counted), then the largest consumer is disconnected; a bystander is served', async () => {
    const { tb, lines, count } = await brokerWithLog({ VMQTT_LIMITS_MEMORY: '4MiB', VMQTT_LIMITS_MAX_INFLIGHT: '65535' })
    await using _ = tb
    const mem = tb.broker.memory
    expect(mem.limit).toBe(4 * MiB)
    await using ok = await bystander(tb.port, 5)
    const slow0 = await subscriber(tb.port, 'slow-qos0', 'flood/q0', 0)
    const slow1 = await subscriber(tb.port, 'slow-qos1', 'flood/q1', 1)
    slow0.pause()
    slow1.pause()
    const { client: pub } = await RawClient.open(tb.port, { version: 5, clientId: 'flooder' })
    let id = 0
    const publish = async (topic: string) => {
      id = id % 65000 + 1
      pub.send(b.publish({ topic, payload, qos: 1, packetId: id, version: 5 }))
      expect((await pub.nextOf('puback')).messageId).toBe(id)
    }
    try {
      // QoS 0 output backs up until 3/4 of the budget, then it is dropped: nobody is closed
      for (let i = 0; i < 2000 && mem.counters.qos0Dropped < 20; i++) await publish('flood/q0')
      expect(mem.counters.qos0Dropped).toBe(20)
      expect(mem.counters.disconnected).toBe(0)
      expect(mem.pending).toBeGreaterThan(3 * MiB)
      expect(mem.pending).toBeLessThanOrEqual(3 * MiB + payload.length + 100)
      expect(tb.broker.isOnline('slow-qos0')).toBe(true)
      expect(tb.broker.stats.dropped).toBe(20)
      expect(tb.broker.drops.memory).toBe(20)
      await ok.check()
      // QoS 1 output is never dropped: it takes usage past the budget, and the connection that
      // holds the most (the QoS 0 subscriber's ~3 MiB) is closed, which brings usage back down
      for (let i = 0; i < 2000 && mem.counters.disconnected === 0; i++) await publish('flood/q1')
      await until('the largest consumer to be closed', () => !tb.broker.isOnline('slow-qos0'))
      expect(mem.counters.disconnected).toBe(1)
      expect(tb.broker.isOnline('slow-qos1')).toBe(true)
      expect(mem.used).toBeLessThanOrEqual(3 * MiB)
      await ok.check()
      // each action logged once (rate-limited), with how many so far
      expect(count('memory budget: dropping QoS 0 messages to clients that do not keep up')).toBe(1)
      expect(count('memory budget: closing the connections that hold the most memory')).toBe(1)
      const closed = lines.find((l) => l.msg === 'memory budget: closing the connections that hold the most memory')!
      expect(closed.clientId).toBe('slow-qos0')
      expect(closed.held as number).toBeGreaterThan(3 * MiB)
      // the closed client sees the end of its connection once it reads again
      slow0.resume()
      await slow0.closed(5000)
      // once the other one is gone too, nothing is counted any more
      slow1.destroy()
      await until('the unsent output of the closed clients to be released', () => mem.pending === 0)
      expect(mem.partial).toBe(0)
    } finally {
      slow0.destroy()
      slow1.destroy()
      await pub.close()
    }
  }, 60_000)

  test('above the budget (the queue of a connected persistent session that does not acknowledge: closing it would not free it) new connections get CONNACK 0x89 (v5) / 3 (v3); counted in $SYS and admin stats; a bystander is served', async () => {
    const token = 'memory-budget-test-token'
    const { tb, count } = await brokerWithLog({ VMQTT_LIMITS_MEMORY: '1MiB', VMQTT_SYS_INTERVAL: '1', VMQTT_ADMIN_TOKEN: token })
    await using _ = tb
    const mem = tb.broker.memory
    await using ok = await bystander(tb.port, 4)
    const monitor = await subscriber(tb.port, 'monitor', '$SYS/broker/memory/refused', 0)
    // receives one message and never acknowledges it: the rest waits in its queue
    const { client: away } = await RawClient.open(tb.port, { version: 5, clientId: 'away', clean: false, properties: { sessionExpiry: 600, receiveMaximum: 1 } })
    away.send(b.subscribe(1, [{ topic: 'queue/#', qos: 1 }], { version: 5 }))
    await away.nextOf('suback')
    const { client: pub } = await RawClient.open(tb.port, { version: 5, clientId: 'publisher' })
    try {
      for (let id = 1; id <= 40; id++) {
        pub.send(b.publish({ topic: 'queue/x', payload, qos: 1, packetId: id, version: 5 }))
        await pub.nextOf('puback')
      }
      // the queue (39 x 64 KiB) is estimated twice a second; closing its client would not free it
      await until('the 39 queued messages to count against the budget', () => mem.queued > 39 * payload.length, 5000)
      expect(mem.over).toBe(true)
      const v5 = await RawClient.open(tb.port, { version: 5, clientId: 'late-v5' })
      expect((v5.connack as IConnackPacket).reasonCode).toBe(SERVER_BUSY)
      await v5.client.closed()
      const v3 = await RawClient.open(tb.port, { version: 4, clientId: 'late-v3' })
      expect((v3.connack as IConnackPacket).returnCode).toBe(3)
      await v3.client.closed()
      expect(mem.counters.refused).toBe(2)
      expect(mem.counters.disconnected).toBe(0)
      expect(count('memory budget: refusing new connections')).toBe(1)
      await ok.check()
      const stats = await (await createAdminApp(tb.broker).request('/api/v1/stats', { headers: { Authorization: `Bearer ${token}` } })).json() as { memory: Record<string, number> }
      expect(stats.memory).toMatchObject({ limit: MiB, refused: 2, disconnected: 0 })
      expect(stats.memory.queued).toBe(mem.queued)
      for (;;) {
        const p = await monitor.nextOf('publish', 3000)
        if (p.cmd === 'publish' && p.payload.toString() === '2') break
      }
      // the queue's owner is let in (here: it takes its session over from a new connection),
      // and gets the queued messages, which brings usage down
      expect(mem.over).toBe(true)
      const back = await RawClient.open(tb.port, { version: 5, clientId: 'away', clean: false, properties: { sessionExpiry: 600 } })
      expect(back.connack as IConnackPacket).toMatchObject({ reasonCode: 0, sessionPresent: true })
      expect(mem.counters.refused).toBe(2)
      back.client.destroy()
    } finally {
      await monitor.close()
      await pub.close()
      away.destroy()
    }
  }, 30_000)

  test('incomplete large packets beyond the budget: the connection holding the largest is closed (v5 DISCONNECT 0x89), the others and a bystander are served', async () => {
    const { tb } = await brokerWithLog({ VMQTT_LIMITS_MEMORY: '4MiB' })
    await using _ = tb
    const mem = tb.broker.memory
    await using ok = await bystander(tb.port, 5)
    const sizes = [1.5 * MiB, MiB, MiB, MiB]
    const clients: RawClient[] = []
    try {
      for (const [i, size] of sizes.entries()) {
        const { client } = await RawClient.open(tb.port, { version: 5, clientId: `partial-${i}` })
        clients.push(client)
        // a PUBLISH that announces a 2 MiB payload and stops after `size` bytes
        const head = b.publish({ topic: 'big', qos: 0, version: 5 }).subarray(2)
        const whole = Buffer.concat([Buffer.from([0x30, ...b.varint(head.length + 2 * MiB)]), head, Buffer.alloc(2 * MiB)])
        const before = mem.partial
        client.send(whole.subarray(0, size))
        if (i < 3) await until(`the incomplete packet of partial-${i}`, () => mem.partial === before + size)
      }
      // the fourth takes usage past 4 MiB: the largest (1.5 MiB) is closed, which is enough
      const d = await clients[0]!.nextOf('disconnect') as IDisconnectPacket
      expect(d.reasonCode).toBe(SERVER_BUSY)
      await clients[0]!.closed()
      await until('the fourth incomplete packet', () => mem.partial === 3 * MiB)
      expect(mem.counters.disconnected).toBe(1)
      for (const c of clients.slice(1)) expect(c.isClosed).toBe(false)
      await ok.check()
      // a connection that goes away releases what it held
      clients[1]!.destroy()
      await until('the released incomplete packet', () => mem.partial === 2 * MiB)
    } finally {
      for (const c of clients) c.destroy()
    }
  }, 30_000)

  test('packets pipelined behind CONNECTs that wait for a slow password check count too: the largest holders are closed', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    const { tb } = await brokerWithLog({ VMQTT_LIMITS_MEMORY: '2MiB', VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_MAX_CONCURRENT_VERIFICATIONS: '1' })
    await using _ = tb
    const mem = tb.broker.memory
    const small = Buffer.alloc(10 * 1024, 0x62)
    // 700 KiB of QoS 0 PUBLISH behind each CONNECT (under the 1 MiB a single login may hold)
    const pipelined = Buffer.concat(Array.from({ length: 70 }, () => b.publish({ topic: 'held', qos: 0, payload: small, version: 5 })))
    const clients = await Promise.all(Array.from({ length: 6 }, (_, i) => RawClient.connect(tb.port, { version: 5, localAddress: `127.0.0.${i + 2}` })))
    try {
      for (const [i, c] of clients.entries()) c.send(Buffer.concat([b.connect({ version: 5, clientId: `held-${i}`, username: 'alice', password: 'wonderland' }), pipelined]))
      // 6 x 700 KiB held > 2 MiB: before, held frames were not counted and nobody was closed
      await until('the budget to close logins holding the most', () => mem.counters.disconnected >= 2, 10_000)
      expect(mem.partial).toBeLessThanOrEqual(mem.limit)
    } finally {
      for (const c of clients) c.destroy()
    }
    // whatever was held is released: replayed after the login, or dropped with the connection
    await until('held frames released', () => mem.partial === 0, 10_000)
  }, 30_000)
})

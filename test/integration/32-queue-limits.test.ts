/**
 * Session queue limits (issue 13, section 1): limits.maxQueuedMessages and maxQueuedBytes,
 * session.queueOverflow (refuse, drop-oldest, drop-new), drops counted by reason ($SYS, admin
 * stats) and logged once a minute per session, and persistent queues that live in the SQLite
 * store (read back in pages) instead of in memory.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createAdminApp } from '../../src/admin/app.ts'
import { enqueue, flushDropLog, roomForAll } from '../../src/broker/queue.ts'
import type { Message } from '../../src/codec/message.ts'
import type { Delivery, Subscription } from '../../src/session/types.ts'
import type { Store } from '../../src/store/types.ts'
import { openAccepted, persistentConnect } from '../helpers/open.ts'
import * as b from '../helpers/packet-builder.ts'
import { payloadsOf, publishOnce, receiveAcked, subscribeAndLeave, warnCapture } from '../helpers/queue-clients.ts'
import { startBroker } from '../helpers/start-broker.ts'

const QUOTA_EXCEEDED = 0x97

describe.each([4, 5] as const)('session.queueOverflow=refuse, MQTT %i', (v) => {
  test('a full queue: the QoS 1 PUBLISH is not acknowledged (v5 PUBACK 0x97, v3 disconnected), no session gets it; resent after the queue drained, every session gets it once', async () => {
    const { log, warns } = warnCapture()
    await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '3', VMQTT_SESSION_QUEUE_OVERFLOW: 'refuse' }, { log })
    await subscribeAndLeave(br.port, v, 'full', 'r/#')
    const { c: other } = await openAccepted(br.port, persistentConnect(v, 'other'))
    other.send(b.subscribe(1, [{ topic: 'r/#', qos: 1 }], { version: v }))
    await other.nextOf('suback')
    let { c: pub } = await openAccepted(br.port, { version: v, clientId: 'pub' })
    for (let i = 1; i <= 3; i++) expect(await publishOnce(pub, v, 'r/x', `m${i}`, 1, i)).toBe(0)
    // the fourth does not fit into full's queue: refused for everyone
    const refused = await publishOnce(pub, v, 'r/x', 'm4', 1, 4)
    expect(refused).toBe(v === 5 ? QUOTA_EXCEEDED : 'closed')
    if (v === 5) expect(await publishOnce(pub, v, 'r/x', 'm4', 2, 5)).toBe(QUOTA_EXCEEDED)
    expect(payloadsOf(await receiveAcked(other, v, 3))).toEqual(['m1', 'm2', 'm3'])
    await other.expectNothing(150)
    expect(br.broker.stats.refused).toBe(v === 5 ? 2 : 1)
    expect(br.broker.stats.dropped).toBe(0)
    expect(warns.filter((w) => w.msg === 'queue limit: publishes refused').map((w) => [w.fields.clientId, w.fields.refused])).toEqual([['full', 1]])
    // full comes back and drains its queue; the publisher resends and it goes through
    const { c: full } = await openAccepted(br.port, persistentConnect(v, 'full'))
    expect(payloadsOf(await receiveAcked(full, v, 3))).toEqual(['m1', 'm2', 'm3'])
    if (v === 4) pub = (await openAccepted(br.port, { version: v, clientId: 'pub' })).c
    expect(await publishOnce(pub, v, 'r/x', 'm4', 1, 6)).toBe(0)
    expect(payloadsOf(await receiveAcked(full, v, 1))).toEqual(['m4'])
    expect(payloadsOf(await receiveAcked(other, v, 1))).toEqual(['m4'])
    await full.expectNothing(100)
    await other.expectNothing(100)
    for (const c of [pub, full, other]) await c.close()
  })
})

describe('session.queueOverflow=refuse', () => {
  test('QoS 0 for a full queue is dropped for that session and counted (queue-full-qos0); its publisher is not refused', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '2', VMQTT_SESSION_QUEUE_QOS0: 'true' })
    expect(br.broker.config.session.queueOverflow).toBe('refuse') // the default
    await subscribeAndLeave(br.port, 5, 'q0', 'z/#', 0)
    const { c: pub } = await openAccepted(br.port, { version: 5, clientId: 'pub' })
    for (let i = 1; i <= 5; i++) pub.send(b.publish({ topic: 'z/x', payload: `z${i}`, qos: 0, version: 5 }))
    expect(await publishOnce(pub, 5, 'other/topic', 'sync', 1, 1)).toBe(0x10) // routed after the QoS 0 ones
    expect(br.broker.drops['queue-full-qos0']).toBe(3)
    expect(br.broker.stats.refused).toBe(0)
    const { c } = await openAccepted(br.port, persistentConnect(5, 'q0'))
    expect(payloadsOf(await receiveAcked(c, 5, 2))).toEqual(['z1', 'z2'])
    await c.expectNothing(100)
    await pub.close()
    await c.close()
  })

  test('a shared group: the message goes to a member with room; refused only when no member has room', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '1' })
    await subscribeAndLeave(br.port, 5, 'away', '$share/g/s/#')
    const { c: pub } = await openAccepted(br.port, { version: 5, clientId: 'pub' })
    // round robin: the first message may go to the only member; its queue is then full
    expect(await publishOnce(pub, 5, 's/x', 'one', 1, 1)).toBe(0)
    expect(await publishOnce(pub, 5, 's/x', 'two', 1, 2)).toBe(QUOTA_EXCEEDED)
    const { c: here } = await openAccepted(br.port, persistentConnect(5, 'here'))
    here.send(b.subscribe(1, [{ topic: '$share/g/s/#', qos: 1 }], { version: 5 }))
    await here.nextOf('suback')
    for (let i = 3; i <= 6; i++) expect(await publishOnce(pub, 5, 's/x', `m${i}`, 1, i)).toBe(0)
    expect(payloadsOf(await receiveAcked(here, 5, 4))).toEqual(['m3', 'm4', 'm5', 'm6'])
    await pub.close()
    await here.close()
  })
})

describe('drop-oldest and drop-new count and log every drop', () => {
  test('drop-oldest: counted as queue-full-oldest in admin stats and $SYS; one warn line per session a minute with client id and count', async () => {
    const { log, warns } = warnCapture()
    await using br = await startBroker({
      VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '3', VMQTT_SESSION_QUEUE_OVERFLOW: 'drop-oldest', VMQTT_SYS_INTERVAL: '1', VMQTT_ADMIN_TOKEN: 'secret-token-for-tests',
    }, { log })
    await subscribeAndLeave(br.port, 5, 'slow', 'd/#')
    const { c: pub } = await openAccepted(br.port, { version: 4, clientId: 'pub' })
    for (let i = 1; i <= 7; i++) expect(await publishOnce(pub, 4, 'd/x', `m${i}`, 1, i)).toBe(0)
    const res = await createAdminApp(br.broker).request('/api/v1/stats', { headers: { Authorization: 'Bearer secret-token-for-tests' } })
    const stats = await res.json() as { dropped: number; refused: number; drops: Record<string, number> }
    expect(stats.drops['queue-full-oldest']).toBe(4)
    expect(stats.dropped).toBe(4)
    expect(stats.refused).toBe(0)
    // $SYS: the retained value, or the next publication, says 4
    const { c: sys } = await openAccepted(br.port, { version: 5, clientId: 'sys-reader' })
    sys.send(b.subscribe(1, [{ topic: '$SYS/broker/messages/dropped/queue-full-oldest', qos: 0 }], { version: 5 }))
    await sys.nextOf('suback')
    for (;;) {
      const p = await sys.nextOf('publish', 3000)
      if (p.cmd === 'publish' && p.payload.toString() === '4') break
    }
    // the first drop is logged at once; the next three wait for the minute to pass
    const lines = () => warns.filter((w) => w.msg === 'queue limit: messages dropped').map((w) => [w.fields.clientId, w.fields.dropped, w.fields.reasons])
    expect(lines()).toEqual([['slow', 1, { 'queue-full-oldest': 1 }]])
    const s = br.broker.sessions.get('slow')!
    flushDropLog(s, Date.now() + 30_000)
    expect(lines().length).toBe(1)
    flushDropLog(s, Date.now() + 60_000)
    expect(lines()).toEqual([['slow', 1, { 'queue-full-oldest': 1 }], ['slow', 3, { 'queue-full-oldest': 3 }]])
    const { c } = await openAccepted(br.port, persistentConnect(5, 'slow'))
    expect(payloadsOf(await receiveAcked(c, 5, 3))).toEqual(['m5', 'm6', 'm7'])
    for (const x of [pub, sys, c]) await x.close()
  })

  test('limits.maxQueuedBytes bounds a queue in bytes (topic + payload); drop-new counts queue-bytes-new', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_BYTES: '250', VMQTT_SESSION_QUEUE_OVERFLOW: 'drop-new' })
    await subscribeAndLeave(br.port, 4, 'bytes', 'b/#')
    const { c: pub } = await openAccepted(br.port, { version: 4, clientId: 'pub' })
    const payload = (i: number) => `${i}`.padEnd(100, '.') // 3 + 100 bytes each: two fit into 250
    for (let i = 1; i <= 5; i++) expect(await publishOnce(pub, 4, 'b/x', payload(i), 1, i)).toBe(0)
    expect(br.broker.drops['queue-bytes-new']).toBe(3)
    expect(br.broker.sessions.get('bytes')!.queuedBytes).toBe(206)
    const { c } = await openAccepted(br.port, persistentConnect(4, 'bytes'))
    expect(payloadsOf(await receiveAcked(c, 4, 2))).toEqual([payload(1), payload(2)])
    await c.expectNothing(100)
    expect(br.broker.sessions.get('bytes')!.queuedBytes).toBe(0)
    for (const x of [pub, c]) await x.close()
  })
})

/** A temporary data dir for brokers on the SQLite store; removed by dispose. */
function sqliteDir(): { env: Record<string, string> } & Disposable {
  const dir = mkdtempSync(join(tmpdir(), 'vmqtt-queue-'))
  return { env: { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: dir, VMQTT_DATA_DURABILITY: 'process' }, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) }
}

describe('persistent queues with the SQLite store', () => {
  test('a connected slow consumer: beyond 1,000 messages its queue goes to the store, and everything arrives in order while publishing goes on', async () => {
    using data = sqliteDir()
    await using br = await startBroker(data.env)
    const { c: sub } = await openAccepted(br.port, { ...persistentConnect(5, 'slow'), properties: { sessionExpiry: 60, receiveMaximum: 5 } })
    sub.send(b.subscribe(1, [{ topic: 'o/#', qos: 1 }], { version: 5 }))
    await sub.nextOf('suback')
    const { c: pub } = await openAccepted(br.port, { version: 4, clientId: 'pub' })
    for (let i = 1; i <= 3000; i++) pub.send(b.publish({ topic: 'o/x', payload: `m${i}`, qos: 1, packetId: i, version: 4 }))
    for (let i = 1; i <= 3000; i++) expect((await pub.nextOf('puback')).messageId).toBe(i)
    const s = br.broker.sessions.get('slow')!
    expect(s.inflightCount).toBe(5)
    expect(s.headCount).toBeLessThanOrEqual(1000)
    expect(s.spilledCount).toBe(2995 - s.headCount)
    // the consumer reads while 500 more arrive
    for (let i = 3001; i <= 3500; i++) pub.send(b.publish({ topic: 'o/x', payload: `m${i}`, qos: 1, packetId: i, version: 4 }))
    const got = payloadsOf(await receiveAcked(sub, 5, 3500))
    expect(got).toEqual(Array.from({ length: 3500 }, (_, i) => `m${i + 1}`))
    expect(s.queuedCount).toBe(0)
    for (const c of [pub, sub]) await c.close()
  })

  test('drop-oldest on a queue in the store: the oldest go, the newest arrive in order, every drop counted', async () => {
    using data = sqliteDir()
    await using br = await startBroker({ ...data.env, VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '500', VMQTT_SESSION_QUEUE_OVERFLOW: 'drop-oldest' })
    await subscribeAndLeave(br.port, 4, 'old', 'k/#')
    const { c: pub } = await openAccepted(br.port, { version: 4, clientId: 'pub' })
    for (let i = 1; i <= 1300; i++) pub.send(b.publish({ topic: 'k/x', payload: `m${i}`, qos: 1, packetId: i, version: 4 }))
    for (let i = 1; i <= 1300; i++) expect((await pub.nextOf('puback')).messageId).toBe(i)
    expect(br.broker.drops['queue-full-oldest']).toBe(800)
    const s = br.broker.sessions.get('old')!
    expect(s.queuedCount).toBe(500)
    // nothing of an away client's queue stays in memory: the few entries read to find the oldest go again
    expect([s.headCount, s.headBytes]).toEqual([0, 0])
    const { c } = await openAccepted(br.port, persistentConnect(4, 'old'))
    expect(payloadsOf(await receiveAcked(c, 4, 500))).toEqual(Array.from({ length: 500 }, (_, i) => `m${i + 801}`))
    await c.expectNothing(100)
    for (const x of [pub, c]) await x.close()
  })

  test('refuse on a queue in the store: the bound holds across a restart (restored counts), and publishing resumes once the queue drained', async () => {
    using data = sqliteDir()
    const env = { ...data.env, VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '300' }
    {
      await using br = await startBroker(env)
      await subscribeAndLeave(br.port, 5, 'bounded', 'f/#')
      const { c: pub } = await openAccepted(br.port, { version: 5, clientId: 'pub' })
      for (let i = 1; i <= 300; i++) pub.send(b.publish({ topic: 'f/x', payload: `m${i}`, qos: 1, packetId: i, version: 5 }))
      for (let i = 1; i <= 300; i++) expect((await pub.nextOf('puback')).messageId).toBe(i)
      expect(await publishOnce(pub, 5, 'f/x', 'm301', 1, 301)).toBe(QUOTA_EXCEEDED)
      // the front looked at for expired messages is not kept in memory
      expect(br.broker.sessions.get('bounded')!.headCount).toBe(0)
      await pub.close()
    }
    await using br = await startBroker(env)
    const { c: pub } = await openAccepted(br.port, { version: 5, clientId: 'pub' })
    expect(await publishOnce(pub, 5, 'f/x', 'm301', 1, 1)).toBe(QUOTA_EXCEEDED)
    const { c } = await openAccepted(br.port, persistentConnect(5, 'bounded'))
    expect(payloadsOf(await receiveAcked(c, 5, 300))).toEqual(Array.from({ length: 300 }, (_, i) => `m${i + 1}`))
    expect(await publishOnce(pub, 5, 'f/x', 'm301', 1, 2)).toBe(0)
    expect(payloadsOf(await receiveAcked(c, 5, 1))).toEqual(['m301'])
    for (const x of [pub, c]) await x.close()
  })

  test('expired messages at the front of a full queue in the store make room (counted as expired), so they do not refuse publishers', async () => {
    using data = sqliteDir()
    // the broker's $SYS/broker/uptime ticks (once a second) are the clock: no sleep
    await using br = await startBroker({ ...data.env, VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '3', VMQTT_SYS_INTERVAL: '1' })
    await subscribeAndLeave(br.port, 5, 'stale', 'e/#')
    const { c: pub } = await openAccepted(br.port, { version: 5, clientId: 'pub' })
    pub.send(b.subscribe(1, [{ topic: '$SYS/broker/uptime', qos: 0 }], { version: 5 }))
    await pub.nextOf('suback')
    for (let i = 1; i <= 3; i++) {
      pub.send(b.publish({ topic: 'e/x', payload: `old${i}`, qos: 1, packetId: i, version: 5, properties: { messageExpiry: 1 } }))
      expect((await pub.nextOf('puback')).messageId).toBe(i)
    }
    expect(await publishOnce(pub, 5, 'e/x', 'new', 1, 4)).toBe(QUOTA_EXCEEDED)
    for (let ticks = 0; ticks < 2;) {
      const p = await pub.nextOf('publish', 2500)
      if (p.cmd === 'publish' && !p.retain) ticks++
    }
    expect(await publishOnce(pub, 5, 'e/x', 'new', 1, 5)).toBe(0)
    expect(br.broker.drops.expired).toBe(3)
    const { c } = await openAccepted(br.port, persistentConnect(5, 'stale'))
    expect(payloadsOf(await receiveAcked(c, 5, 1))).toEqual(['new'])
    await c.expectNothing(100)
    for (const x of [pub, c]) await x.close()
  })

  test('the defaults keep a subscriber away 10 minutes at 1,000 msgs/s of 100-byte payloads (600,000 messages) without a drop or any of it in memory, and refuse at the bound rather than drop', async () => {
    await using br = await startBroker() // the default limits and policy
    const broker = br.broker
    expect(broker.config.session.queueOverflow).toBe('refuse')
    const topic = 'plant/line-7/machine-42/temperature'
    const payload = Buffer.alloc(100, 120)
    const message = (i: number): Message => ({ topic, payload, qos: 1, retain: false, props: null, expiresAt: 0, origin: `p${i}` })
    const delivery = (i: number): Delivery => ({ msg: message(i), qos: 1, retain: false, subIds: null })
    // the SQLite outbox, without the disk: what the store is asked to write, and pages read back from it
    let written = 0
    const outbox = {
      kind: 'sqlite', putOutbox: () => { written++ }, removeOutbox: () => {},
      pageQueued: (_id: string, after: number, limit: number) => Array.from({ length: limit }, (_, i) => ({ seq: after + 1 + i, packetId: 0, state: 'queued' as const, delivery: { ...delivery(after + 1 + i), seq: after + 1 + i } })),
    } as unknown as Store
    const s = broker.createSession('away', 5)
    s.expiryInterval = 3600
    s.disconnectedAt = Date.now()
    s.store = outbox
    const sub: Subscription = { clientId: 'away', raw: 'plant/#', filter: 'plant/#', group: null, qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, subId: 0 }
    for (let i = 1; i <= 600_000; i++) {
      // what route() asks before each message is acknowledged under refuse, then the queueing
      if (i % 1000 === 0) expect(roomForAll(broker.sessions, [sub], null, message(i))).toBe(true)
      enqueue(s, delivery(i))
    }
    expect([s.queuedCount, s.headCount, s.headBytes, written, broker.stats.dropped, broker.stats.refused]).toEqual([600_000, 0, 0, 600_000, 0, 0])
    expect(s.queuedBytes).toBe(600_000 * (topic.length + 100))
    // on to the message bound (1,000,000): then QoS 1/2 publishers are refused, nothing is dropped
    for (let i = 600_001; i <= 1_000_000; i++) enqueue(s, delivery(i))
    expect(s.queuedCount).toBe(1_000_000)
    expect(roomForAll(broker.sessions, [sub], null, message(0))).toBe(false)
    expect([s.queuedCount, s.headCount, broker.stats.dropped, broker.stats.refused]).toEqual([1_000_000, 0, 0, 1])
    s.store = null
  }, 30_000)

  test('an offline session\'s queue is not held in memory: it stays in the store (also across a restart) and comes back in pages, in order', async () => {
    using data = sqliteDir()
    const env = data.env
    const N = 2500
    {
      {
        await using br = await startBroker(env)
        await subscribeAndLeave(br.port, 4, 'pager', 'p/#')
        const { c: pub } = await openAccepted(br.port, { version: 4, clientId: 'pub' })
        for (let i = 1; i <= N; i++) pub.send(b.publish({ topic: 'p/x', payload: `m${i}`, qos: 1, packetId: i, version: 4 }))
        for (let i = 1; i <= N; i++) expect((await pub.nextOf('puback')).messageId).toBe(i)
        const s = br.broker.sessions.get('pager')!
        expect(s.queue.length).toBe(0)
        expect(s.queuedCount).toBe(N)
        expect(s.headBytes).toBe(0)
        await pub.close()
      }
      await using br = await startBroker(env)
      const s = br.broker.sessions.get('pager')!
      expect(s.queue.length).toBe(0)
      expect(s.queuedCount).toBe(N)
      let bytes = 0
      for (let i = 1; i <= N; i++) bytes += 3 + `m${i}`.length
      expect(s.queuedBytes).toBe(bytes)
      const { c } = await openAccepted(br.port, persistentConnect(4, 'pager'))
      const got = payloadsOf(await receiveAcked(c, 4, N))
      expect(got).toEqual(Array.from({ length: N }, (_, i) => `m${i + 1}`))
      await c.expectNothing(100)
      expect(s.queuedCount).toBe(0)
      expect(s.queuedBytes).toBe(0)
      await c.close()
    }
  })
})

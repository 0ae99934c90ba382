/**
 * Queue limits after review (issue 13, section 1): a session that ends with its connection never
 * makes refuse refuse publishers; Session Expiry 0 resumes a stored queue page by page; an MQTT 3
 * publisher closed by a refusal keeps its will; messages the client may no longer read are
 * counted; queue bytes are UTF-8 bytes in memory and after a restart.
 */
import { describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { accepted, nextMessage, publish1, subackCodes } from '../helpers/acl-clients.ts'
import { openAccepted, persistentConnect } from '../helpers/open.ts'
import * as b from '../helpers/packet-builder.ts'
import { pingWatch } from '../helpers/ping-watch.ts'
import { payloadsOf, publishOnce, receiveAcked, subscribeAndLeave, warnCapture } from '../helpers/queue-clients.ts'
import { startBroker } from '../helpers/start-broker.ts'

const QUOTA_EXCEEDED = 0x97

/** A temporary data dir for brokers on the SQLite store; removed by dispose. */
function dataDir(durability = 'process'): { dir: string; env: Record<string, string> } & Disposable {
  const dir = mkdtempSync(join(tmpdir(), 'vmqtt-42-'))
  return { dir, env: { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: dir, VMQTT_DATA_DURABILITY: durability }, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) }
}

/** What a SIGKILL leaves: the database files as committed at this instant, copied to another dir. */
function crashCopy(from: string, to: string): void {
  for (const f of ['vmqtt.db', 'vmqtt.db-wal']) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f))
}

/** Rows the store holds for a client id (sessions, outbox, inbound QoS 2), read from the file. */
function rowsOf(dir: string, clientId: string): number {
  const db = new Database(join(dir, 'vmqtt.db'), { readonly: true })
  try {
    let n = 0
    for (const t of ['sessions', 'outbox', 'inbound_qos2']) n += (db.query(`SELECT COUNT(*) AS n FROM ${t} WHERE client_id = ?`).get(clientId) as { n: number }).n
    return n
  } finally { db.close() }
}

describe.each([4, 5] as const)('refuse and sessions that end with their connection, MQTT %i publisher', (v) => {
  test('a clean-session subscriber to # that never acknowledges fills its queue: its messages are dropped and counted (queue-full-transient), publishers are not refused', async () => {
    const { log, warns } = warnCapture()
    await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '3', VMQTT_LIMITS_MAX_INFLIGHT: '2' }, { log })
    expect(br.broker.config.session.queueOverflow).toBe('refuse') // the default
    const { c: lazy } = await openAccepted(br.port, { version: 5, clientId: 'lazy' })
    lazy.send(b.subscribe(1, [{ topic: '#', qos: 1 }], { version: 5 }))
    await lazy.nextOf('suback')
    const { c: pub } = await openAccepted(br.port, { version: v, clientId: 'victim' })
    for (let i = 1; i <= 20; i++) expect(await publishOnce(pub, v, `plant/${i % 7}`, `m${i}`, 1, i)).toBe(0)
    expect(br.broker.stats.refused).toBe(0)
    // 2 in flight, 3 queued, 15 dropped
    expect(br.broker.drops['queue-full-transient']).toBe(15)
    expect(warns.filter((w) => w.msg === 'queue limit: messages dropped').map((w) => [w.fields.clientId, w.fields.reasons])).toEqual([['lazy', { 'queue-full-transient': 1 }]])
    // a persistent session with a full queue still refuses
    await subscribeAndLeave(br.port, 5, 'kept', 'plant/#')
    for (let i = 21; i <= 23; i++) expect(await publishOnce(pub, v, 'plant/x', `m${i}`, 1, i)).toBe(0)
    expect(await publishOnce(pub, v, 'plant/x', 'm24', 1, 24)).toBe(v === 5 ? QUOTA_EXCEEDED : 'closed')
    await pub.close()
    await lazy.close()
  })
})

describe('refuse and shared groups', () => {
  test('a group whose only members end with their connection drops for a full member; a group with a full persistent member and no room refuses', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '1', VMQTT_LIMITS_MAX_INFLIGHT: '1' })
    const { c: lazy } = await openAccepted(br.port, { version: 5, clientId: 'lazy' })
    lazy.send(b.subscribe(1, [{ topic: '$share/g/s/#', qos: 1 }], { version: 5 }))
    await lazy.nextOf('suback')
    const { c: pub } = await openAccepted(br.port, { version: 5, clientId: 'pub' })
    for (let i = 1; i <= 4; i++) expect(await publishOnce(pub, 5, 's/x', `m${i}`, 1, i)).toBe(0)
    expect(br.broker.drops['queue-full-transient']).toBe(2)
    // a persistent member with room takes what the full one cannot
    await subscribeAndLeave(br.port, 5, 'kept', '$share/g/s/#')
    expect(await publishOnce(pub, 5, 's/x', 'm5', 1, 5)).toBe(0)
    expect(br.broker.sessions.get('kept')!.queuedCount).toBe(1)
    expect(br.broker.drops['queue-full-transient']).toBe(2)
    // now no member has room and one of them is persistent: refused
    expect(await publishOnce(pub, 5, 's/x', 'm6', 1, 6)).toBe(QUOTA_EXCEEDED)
    await pub.close()
    await lazy.close()
  })
})

describe('Session Expiry 0 resumes a stored queue', () => {
  test('read on in pages while the connection lives, all in order, the event loop stays free; nothing of the session is left once it ended (restart, or a crash during or after it)', async () => {
    using data = dataDir()
    using crashed = dataDir()
    using crashedAfter = dataDir()
    const N = 20_000
    {
      await using br = await startBroker(data.env)
      await subscribeAndLeave(br.port, 5, 'resumer', 'q/#')
      const { c: pub } = await openAccepted(br.port, { version: 4, clientId: 'pub' })
      for (let i = 1; i <= N; i++) pub.send(b.publish({ topic: 'q/x', payload: `m${i}`, qos: 1, packetId: (i % 65535) || 1, version: 4 }))
      for (let i = 1; i <= N; i++) await pub.nextOf('puback', 10_000)
      const { c: other } = await openAccepted(br.port, { version: 4, clientId: 'bystander' })
      const watch = pingWatch(other)
      const { c } = await openAccepted(br.port, { version: 5, clientId: 'resumer', clean: false })
      const s = br.broker.sessions.get('resumer')!
      expect(s.expiryInterval).toBe(0)
      // a head of a page or so, not the queue
      expect(s.headCount).toBeLessThanOrEqual(1000)
      expect(s.spilledCount).toBeGreaterThan(N - 2000)
      const got = payloadsOf(await receiveAcked(c, 5, N, 10_000))
      const { maxMs, pings } = await watch.stop()
      expect(got).toEqual(Array.from({ length: N }, (_, i) => `m${i + 1}`))
      console.log(`resume of ${N} queued with Session Expiry 0: bystander ping max ${Math.round(maxMs)} ms over ${pings} pings`)
      expect(maxMs).toBeLessThan(500)
      // a message published now comes after the stored ones
      expect(await publishOnce(pub, 4, 'q/x', 'live', 1, 1)).toBe(0)
      expect(payloadsOf(await receiveAcked(c, 5, 1))).toEqual(['live'])
      br.broker.commits.flush()
      crashCopy(data.dir, crashed.dir)
      await c.close()
      expect(br.broker.sessions.get('resumer')).toBeUndefined()
      br.broker.commits.flush()
      crashCopy(data.dir, crashedAfter.dir)
      await other.close()
      await pub.close()
    }
    // the crash during the connection left the session's rows (its queue was being read on)
    expect(rowsOf(crashed.dir, 'resumer')).toBeGreaterThan(0)
    for (const d of [data, crashed, crashedAfter]) {
      await using br = await startBroker(d.env)
      expect(br.broker.sessions.get('resumer')).toBeUndefined()
      await br.close()
      expect(rowsOf(d.dir, 'resumer')).toBe(0)
    }
  }, 60_000)
})

describe('a refused MQTT 3 publisher is closed without its will', () => {
  test('refuse: the publisher is disconnected, its retained will is not published; it reconnects and resends', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '1' })
    await subscribeAndLeave(br.port, 5, 'full', 'r/#')
    const { c: watcher } = await openAccepted(br.port, { version: 5, clientId: 'watcher' })
    watcher.send(b.subscribe(1, [{ topic: 'status/#', qos: 1 }], { version: 5 }))
    await watcher.nextOf('suback')
    const will = { topic: 'status/pub', payload: 'offline', qos: 1, retain: true }
    const { c: pub } = await openAccepted(br.port, { version: 4, clientId: 'pub', will })
    expect(await publishOnce(pub, 4, 'r/x', 'one', 1, 1)).toBe(0)
    expect(await publishOnce(pub, 4, 'r/x', 'two', 1, 2)).toBe('closed')
    // the will would be published as the connection closed: a PINGRESP comes first, and nothing is retained
    watcher.send(b.pingreq())
    expect((await watcher.next()).cmd).toBe('pingresp')
    let retained = 0
    br.broker.store.matchRetained('status/#', () => { retained++ })
    expect(retained).toBe(0)
    const { c: again } = await openAccepted(br.port, { version: 4, clientId: 'pub', will })
    await again.close()
    await watcher.close()
  })
})

describe('messages the client may no longer read are counted (acl-read)', () => {
  test('queued and unacknowledged messages dropped on resume after a rules change', async () => {
    using data = dataDir()
    const file = join(data.dir, 'acl')
    writeFileSync(file, 'allow all all #\n')
    await using br = await startBroker({ VMQTT_ACL_FILE: file })
    const c = await accepted(br.port, { version: 5, clientId: 'reader', persistent: true })
    expect(await subackCodes(c, 5, ['#'])).toEqual([1])
    const p = await accepted(br.port, { version: 5 })
    expect(await publish1(p, 5, 'b/0', 'in flight')).toBe(0)
    expect((await c.nextOf('publish')).cmd).toBe('publish') // not acknowledged
    await c.close()
    expect(await publish1(p, 5, 'b/1', 'queued')).toBe(0)
    expect(await publish1(p, 5, 'a/1', 'queued')).toBe(0)
    writeFileSync(file, 'deny all subscribe b/#\nallow all all #\n')
    expect(await br.broker.reload()).toEqual([])
    expect(br.broker.drops['acl-read']).toBe(0)
    const back = await accepted(br.port, { version: 5, clientId: 'reader', persistent: true })
    expect(await nextMessage(back)).toEqual(['a/1', 'queued'])
    expect(br.broker.drops['acl-read']).toBe(2)
    expect(br.broker.stats.dropped).toBe(2)
    await back.close()
    await p.close()
  })
})

describe('queue bytes are UTF-8 bytes', () => {
  test('the same count in memory and after a restart (the store sums the same unit)', async () => {
    using data = dataDir()
    const topic = 'températur/😀/ü'
    const payload = 'x'.repeat(10)
    let before = 0
    {
      await using br = await startBroker(data.env)
      await subscribeAndLeave(br.port, 5, 'utf8', '#')
      const { c: pub } = await openAccepted(br.port, { version: 5, clientId: 'pub' })
      for (let i = 1; i <= 3; i++) expect(await publishOnce(pub, 5, topic, payload, 1, i)).toBe(0)
      before = br.broker.sessions.get('utf8')!.queuedBytes
      await pub.close()
    }
    expect(before).toBe(3 * (Buffer.byteLength(topic) + 10))
    await using br = await startBroker(data.env)
    expect(br.broker.sessions.get('utf8')!.queuedBytes).toBe(before)
    const { c } = await openAccepted(br.port, persistentConnect(5, 'utf8'))
    expect(payloadsOf(await receiveAcked(c, 5, 3))).toEqual([payload, payload, payload])
    expect(br.broker.sessions.get('utf8')!.queuedBytes).toBe(0)
    await c.close()
  })
})

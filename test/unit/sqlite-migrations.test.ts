/**
 * Schema migrations from a real version 1 database: test/fixtures/vmqtt-v1.db (made by
 * test/fixtures/make-v1-db.ts with only the first migration applied). A copy is opened with the
 * current SqliteStore: every row survives, user_version becomes the current version, the v2
 * column exists and works, and opening again changes nothing.
 */
import { afterEach, beforeEach, describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Message } from '../../src/codec/message.ts'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts'
import type { Restored } from '../../src/store/types.ts'

const FIXTURE = join(import.meta.dir, '..', 'fixtures', 'vmqtt-v1.db')
/** The wire bytes of one v5 user property k=v, as the fixture stores them. */
const USER_PROPS = Buffer.from([0x26, 0, 1, 0x6b, 0, 1, 0x76])

let dir = ''
let path = ''
const open = async (): Promise<SqliteStore> => {
  const s = new SqliteStore({ dir, durability: 'fsync', maxSizeMb: 0 })
  await s.open()
  return s
}

/** Reads schema facts with a plain connection (only while no store holds the file). */
function inspect(): { version: number; sessionColumns: string[]; indexes: string[]; counts: Record<string, number>; schema: (string | null)[] } {
  const db = new Database(path, { strict: true })
  try {
    const version = (db.query('PRAGMA user_version').get() as { user_version: number }).user_version
    const sessionColumns = (db.query('PRAGMA table_info(sessions)').all() as { name: string }[]).map((c) => c.name)
    const indexes = (db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[]).map((r) => r.name)
    const counts: Record<string, number> = {}
    for (const t of ['retained', 'sessions', 'messages', 'outbox', 'inbound_qos2']) {
      counts[t] = (db.query(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n
    }
    const schema = (db.query('SELECT sql FROM sqlite_master ORDER BY type, name').all() as { sql: string | null }[]).map((r) => r.sql)
    return { version, sessionColumns, indexes, counts, schema }
  } finally {
    db.close()
  }
}

function retained(s: SqliteStore): Map<string, Message> {
  const out = new Map<string, Message>()
  s.matchRetained('#', (m) => { out.set(m.topic, m) })
  return out
}

/** Everything the v1 fixture holds, as the current store must read it. */
function expectFixtureData(s: SqliteStore, r: Restored): void {
  const ret = retained(s)
  expect([...ret.keys()].sort()).toEqual(['fixture/retained/a', 'fixture/retained/b'])
  const a = ret.get('fixture/retained/a')!
  expect(a.payload.toString()).toBe('retained-a')
  expect(a.qos).toBe(1)
  expect(a.retain).toBe(true)
  expect(a.expiresAt).toBe(0)
  expect(a.props?.payloadFormatIndicator).toBe(1)
  expect(a.props?.contentType).toBe('text/plain')
  expect(a.props?.userProps).toEqual(USER_PROPS)
  const bm = ret.get('fixture/retained/b')!
  expect([...bm.payload]).toEqual([0, 1, 2, 255])
  expect(bm.qos).toBe(0)
  expect(bm.props).toBeNull()
  expect(bm.expiresAt).toBe(4102444800000)

  const sessions = [...r.sessions].sort((x, y) => x.clientId.localeCompare(y.clientId))
  expect(sessions.map((x) => x.clientId)).toEqual(['fixture-v4', 'fixture-v5'])
  const [v4, v5] = sessions as [typeof sessions[0], typeof sessions[0]]
  expect(v5.version).toBe(5)
  expect(v5.expiryInterval).toBe(3600)
  expect(v5.disconnectedAt).toBe(1700000000000)
  expect(v5.subscriptions).toEqual([
    { clientId: 'fixture-v5', raw: 'fixture/q/+', filter: 'fixture/q/+', group: null, qos: 2, noLocal: true, retainAsPublished: true, retainHandling: 1, subId: 3 },
  ])
  // the v1 schema had no will column: a migrated session has no will
  expect(v5.will).toBeNull()
  expect(v5.willAt).toBe(0)
  expect(v4.version).toBe(4)
  expect(v4.expiryInterval).toBe(4294967295)
  expect(v4.disconnectedAt).toBe(1700000001000)
  expect(v4.subscriptions[0]).toMatchObject({ raw: '$share/g/fixture/#', filter: 'fixture/#', group: 'g', qos: 1 })
  expect(v4.will).toBeNull()

  // the queued entry is summed up by load() and read by pageQueued; load() gives the inflight ones
  expect(r.queued.get('fixture-v5')).toEqual({ count: 1, bytes: 'fixture/q/1'.length + 'queued-1'.length, lastSeq: 1 })
  const q5 = s.pageQueued('fixture-v5', 0, 10)
  expect(q5.map((e) => [e.seq, e.packetId, e.state])).toEqual([[1, 0, 'queued']])
  expect(q5[0]!.delivery).toMatchObject({ qos: 1, retain: false, subIds: [3], seq: 1 })
  expect(q5[0]!.delivery.msg).toMatchObject({ topic: 'fixture/q/1', qos: 1, retain: false, expiresAt: 0, origin: 'pub-a', props: null })
  expect(q5[0]!.delivery.msg.payload.toString()).toBe('queued-1')
  const o5 = r.outbox.get('fixture-v5')!
  expect(o5.map((e) => [e.seq, e.packetId, e.state])).toEqual([[2, 7, 'pubrel']])
  expect(o5[0]!.delivery).toMatchObject({ qos: 2, retain: true, subIds: null, seq: 2 })
  const m2 = o5[0]!.delivery.msg
  expect(m2).toMatchObject({ topic: 'fixture/q/2', qos: 2, retain: true, expiresAt: 4102444800000, origin: 'pub-b' })
  expect(m2.payload.toString()).toBe('inflight-2')
  expect(m2.props?.correlationData?.toString()).toBe('corr')
  expect(m2.props?.responseTopic).toBe('reply/here')
  const o4 = r.outbox.get('fixture-v4')!
  expect(o4.map((e) => [e.seq, e.packetId, e.state])).toEqual([[5, 3, 'publish']])
  expect(o4[0]!.delivery.msg.payload.toString()).toBe('queued-1')
  expect([...r.outbox.keys()].sort()).toEqual(['fixture-v4', 'fixture-v5'])

  expect(r.inboundQos2.get('fixture-v5')).toEqual([42, 43])
  expect(r.inboundQos2.size).toBe(1)
}

describe('SQLite schema migration from the version 1 fixture', () => {
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmqtt-migrate-'))
    path = join(dir, 'vmqtt.db')
    copyFileSync(FIXTURE, path)
  })

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true })
  })

  test('the fixture is a version 1 database (no will column, no v2 index)', () => {
    const before = inspect()
    expect(before.version).toBe(1)
    expect(before.sessionColumns).not.toContain('will')
    expect(before.indexes).toEqual([])
    expect(before.counts).toEqual({ retained: 2, sessions: 2, messages: 2, outbox: 3, inbound_qos2: 2 })
    expect(before.schema.join('\n')).not.toContain('will')
  })

  test('opening it migrates to the current version: sessions, retained messages, outbox and QoS 2 ids intact, will (v2) and owner (v3) columns added', async () => {
    const s = await open()
    try {
      expectFixtureData(s, s.load())
    } finally {
      await s.close()
    }
    const after = inspect()
    expect(after.version).toBe(3)
    expect(after.sessionColumns).toEqual(['client_id', 'version', 'expiry', 'disconnected_at', 'subscriptions', 'will', 'owner'])
    expect(after.indexes).toEqual(['outbox_message'])
    expect(after.counts).toEqual({ retained: 2, sessions: 2, messages: 2, outbox: 3, inbound_qos2: 2 })
  })

  test('the v2 will column is usable on a migrated database: a will written after the migration is read back', async () => {
    const s = await open()
    const [rec] = s.load().sessions.filter((x) => x.clientId === 'fixture-v5')
    const will = {
      msg: { topic: 'fixture/will', payload: Buffer.from('gone'), qos: 1 as const, retain: true, props: { contentType: 'text/plain' }, expiresAt: 0, origin: 'fixture-v5' },
      delay: 30, expiry: 120,
    }
    s.saveSession({ ...rec!, will, willAt: 1700000030000 })
    expect(s.commit()).toBe(0)
    await s.close()
    const again = await open()
    try {
      const got = again.load().sessions.find((x) => x.clientId === 'fixture-v5')!
      expect(got.willAt).toBe(1700000030000)
      expect(got.will?.delay).toBe(30)
      expect(got.will?.expiry).toBe(120)
      expect(got.will?.msg).toMatchObject({ topic: 'fixture/will', qos: 1, retain: true, origin: 'fixture-v5', props: { contentType: 'text/plain' } })
      expect(got.will?.msg.payload.toString()).toBe('gone')
    } finally {
      await again.close()
    }
  })

  test('opening the migrated database again is idempotent: same data, same version, same schema', async () => {
    const first = await open()
    await first.close()
    const once = inspect()
    expect(once.version).toBe(3)
    const second = await open()
    try {
      expectFixtureData(second, second.load())
    } finally {
      await second.close()
    }
    // nothing migrated the second time: version, schema text and row counts are unchanged
    expect(inspect()).toEqual(once)
  })
})

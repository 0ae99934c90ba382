/**
 * Identity and quotas over real sockets (issue 13, section 5): wills on $SYS/, sessions that
 * belong to the username that made them (also after a restart), re-checks on reload (wills
 * against the ACL, users removed from the password file), retained bytes and sessions per user,
 * the admin API's ?id= kick, the audit log's throttles and truncation, file modes and the open
 * /health and /ready.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IConnackPacket, IPublishPacket, Packet } from 'mqtt-packet'
import { startAdmin } from '../../src/admin/app.ts'
import { addOrUpdateUser, removeUser } from '../../src/auth/password-file.ts'
import { captureLog } from '../helpers/capture-log.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

const dir = mkdtempSync(join(tmpdir(), 'vmqtt-identity-'))
const passwd = join(dir, 'passwd')
afterAll(() => rmSync(dir, { recursive: true, force: true }))
beforeAll(async () => {
  await addOrUpdateUser(passwd, 'alice', 'pw-alice')
  await addOrUpdateUser(passwd, 'bob', 'pw-bob')
})

const AUTH = { VMQTT_AUTH_FAIL_DELAY: '0' }
const codeOf = (p: Packet) => { const a = p as IConnackPacket; return (a.reasonCode ?? a.returnCode)! }
const login = (user: 'alice' | 'bob') => ({ username: user, password: `pw-${user}` })
let n = 0
const fresh = (name: string) => join(dir, `${name}-${++n}`)

async function open(port: number, o: b.ConnectOpts): Promise<{ c: RawClient; code: number; sessionPresent: boolean }> {
  const { client, connack } = await RawClient.open(port, o)
  return { c: client, code: codeOf(connack), sessionPresent: (connack as IConnackPacket).sessionPresent }
}

describe('a will on $SYS/ is refused like a PUBLISH there', () => {
  for (const version of [4, 5] as const) {
    test(`v${version}: authentication on, no ACL file: CONNACK ${version === 5 ? '0x87' : '5'}, nothing retained`, async () => {
      await using br = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd, ...AUTH })
      const { c, code } = await open(br.port, { version, clientId: 'sys-will', ...login('alice'), will: { topic: '$SYS/broker/uptime', payload: 'spoofed', retain: true } })
      expect(code).toBe(version === 5 ? 0x87 : 5)
      await c.closed()
      expect(br.broker.store.getRetained('$SYS/broker/uptime')).toBeUndefined()
      expect((await open(br.port, { version, clientId: 'ok-will', ...login('alice'), will: { topic: 'x/y', payload: 'fine' } })).code).toBe(0)
    })
  }
})

describe('a persistent session belongs to the username that made it', () => {
  for (const version of [4, 5] as const) {
    test(`v${version}: bob with alice's client id is refused; alice stays online with her subscription`, async () => {
      await using br = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd, ...AUTH })
      const alice = await open(br.port, { version, clientId: 'dev-1', clean: false, ...login('alice'), ...(version === 5 ? { properties: { sessionExpiry: 600 } } : {}) })
      expect(alice.code).toBe(0)
      alice.c.send(b.subscribe(1, [{ topic: 'alice/in', qos: 1 }], { version }))
      await alice.c.nextOf('suback')
      const bob = await open(br.port, { version, clientId: 'dev-1', clean: version === 4, ...login('bob') })
      expect(bob.code).toBe(version === 5 ? 0x87 : 5)
      await bob.c.closed()
      // alice was not kicked and her session is whole
      const pub = await open(br.port, { version, clientId: 'pub', ...login('bob') })
      pub.c.send(b.publish({ topic: 'alice/in', payload: 'still here', qos: 1, packetId: 1, version }))
      const got = await alice.c.nextOf('publish') as IPublishPacket
      expect(got.payload.toString()).toBe('still here')
      await Promise.all([alice.c.close(), pub.c.close()])
    })
  }

  test('the owner survives a restart (SQLite); session.takeoverAcrossUsers allows the takeover', async () => {
    const data = fresh('data')
    const env = { VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: data, ...AUTH }
    {
      await using br = await startBroker(env)
      const a = await open(br.port, { version: 5, clientId: 'dev-2', clean: false, ...login('alice'), properties: { sessionExpiry: 600 } })
      expect(a.code).toBe(0)
      await a.c.close()
    }
    {
      await using br = await startBroker(env)
      const bob = await open(br.port, { version: 5, clientId: 'dev-2', clean: false, ...login('bob'), properties: { sessionExpiry: 600 } })
      expect(bob.code).toBe(0x87)
      const a = await open(br.port, { version: 5, clientId: 'dev-2', clean: false, ...login('alice'), properties: { sessionExpiry: 600 } })
      expect([a.code, a.sessionPresent]).toEqual([0, true])
      await a.c.close()
    }
    {
      await using br = await startBroker({ ...env, VMQTT_SESSION_TAKEOVER_ACROSS_USERS: 'true' })
      const bob = await open(br.port, { version: 5, clientId: 'dev-2', clean: false, ...login('bob'), properties: { sessionExpiry: 600 } })
      expect([bob.code, bob.sessionPresent]).toEqual([0, true])
      await bob.c.close()
    }
  })

  test('anonymous sessions are anyone\'s; an anonymous client cannot take a user\'s session', async () => {
    await using br = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_AUTH_ANONYMOUS: 'true', ...AUTH })
    const persistent = { version: 5 as const, clean: false, properties: { sessionExpiry: 600 } }
    const anon = await open(br.port, { ...persistent, clientId: 'anon-1' })
    await anon.c.close()
    expect((await open(br.port, { ...persistent, clientId: 'anon-1', ...login('alice') })).code).toBe(0)
    expect((await open(br.port, { ...persistent, clientId: 'anon-1' })).code).toBe(0x87)
  })
})

describe('sessions per user (limits.maxSessionsPerUser)', () => {
  for (const version of [4, 5] as const) {
    test(`v${version}: the third session of alice gets ${version === 5 ? '0x97' : '3'}; her own sessions resume; bob is not affected`, async () => {
      const cap = captureLog()
      await using br = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_LIMITS_MAX_SESSIONS_PER_USER: '2', ...AUTH }, { log: cap.log })
      const p = { version, clean: false, ...(version === 5 ? { properties: { sessionExpiry: 600 } } : {}) }
      for (const id of ['s1', 's2']) expect((await open(br.port, { ...p, clientId: id, ...login('alice') })).code).toBe(0)
      for (let i = 0; i < 2; i++) expect((await open(br.port, { ...p, clientId: `s3-${i}`, ...login('alice') })).code).toBe(version === 5 ? 0x97 : 3)
      expect((await open(br.port, { ...p, clientId: 's1', ...login('alice') })).code).toBe(0)
      expect((await open(br.port, { ...p, clientId: 'b1', ...login('bob') })).code).toBe(0)
      expect(cap.matching('connection refused')[0]!.fields.detail).toContain('limits.maxSessionsPerUser')
    }, 15_000)
  }
})

describe('retained bytes (limits.maxRetainedBytes)', () => {
  test('a retained message past the limit is delivered but not retained; replacing a smaller one fits; warnings are throttled', async () => {
    const cap = captureLog()
    await using br = await startBroker({ VMQTT_LIMITS_MAX_RETAINED_BYTES: '1000' }, { log: cap.log })
    const { client: sub } = await RawClient.open(br.port, { version: 5, clientId: 'sub' })
    sub.send(b.subscribe(1, [{ topic: 'r/#', qos: 0 }], { version: 5 }))
    await sub.nextOf('suback')
    const { client: pub } = await RawClient.open(br.port, { version: 5, clientId: 'pub' })
    const big = 'x'.repeat(600)
    pub.send(b.publish({ topic: 'r/1', payload: big, retain: true, version: 5 }))
    for (let i = 0; i < 30; i++) pub.send(b.publish({ topic: `r/2/${i}`, payload: big, retain: true, version: 5 }))
    for (let i = 0; i < 31; i++) await sub.nextOf('publish')
    expect(br.broker.store.retainedCount()).toBe(1)
    expect(br.broker.stats.retainedRefused).toBe(30)
    const warns = cap.matching('retained message limit reached')
    expect(warns.length).toBeGreaterThan(0)
    expect(warns.length).toBeLessThanOrEqual(20)
    expect(warns[0]!.msg).toContain('limits.maxRetainedBytes 1000')
    pub.send(b.publish({ topic: 'r/1', payload: 'small', retain: true, version: 5 }))
    pub.send(b.publish({ topic: 'r/3', payload: 'y'.repeat(900), retain: true, version: 5 }))
    await sub.nextOf('publish')
    await sub.nextOf('publish')
    expect(br.broker.store.retainedBytes()).toBe(3 + 5 + 3 + 900)
    await Promise.all([sub.close(), pub.close()])
  })
})

describe('reload', () => {
  test('a will the new ACL rules deny is dropped (logged, audited); a user removed from the password file is disconnected (v5 0x87)', async () => {
    const acl = fresh('acl')
    const users = fresh('passwd')
    writeFileSync(users, readFileSync(passwd))
    writeFileSync(acl, 'allow all all #\n')
    const audit = fresh('audit.log')
    await using br = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: users, VMQTT_ACL_FILE: acl, VMQTT_AUDIT_LOG: audit, ...AUTH })
    const { client: watcher } = await RawClient.open(br.port, { version: 5, clientId: 'watcher', ...login('alice') })
    watcher.send(b.subscribe(1, [{ topic: 'wills/#', qos: 0 }], { version: 5 }))
    await watcher.nextOf('suback')
    const a = await open(br.port, { version: 5, clientId: 'willer', ...login('alice'), will: { topic: 'wills/alice', payload: 'gone' } })
    const bob = await open(br.port, { version: 5, clientId: 'bob-1', ...login('bob') })
    expect([a.code, bob.code]).toEqual([0, 0])
    writeFileSync(acl, 'deny all publish wills/#\nallow all all #\n')
    removeUser(users, 'bob')
    expect(await br.broker.reload()).toEqual([])
    const d = await bob.c.nextOf('disconnect')
    expect((d as { reasonCode?: number }).reasonCode).toBe(0x87)
    a.c.destroy()
    await watcher.expectNothing(300)
    const lines = readFileSync(audit, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines).toContainEqual(expect.objectContaining({ event: 'kick', username: 'bob', reason: 'user removed from the password file' }))
    expect(lines).toContainEqual(expect.objectContaining({ event: 'acl-denied', clientId: 'willer', action: 'will dropped on reload', topic: 'wills/alice' }))
    await watcher.close()
  })
})

describe('admin API and audit log', () => {
  const TOKEN = 'test-only-admin-token-0123456789'
  async function withAdmin(env: Record<string, string>, body: (api: (path: string, init?: RequestInit) => Promise<Response>, port: number) => Promise<void>) {
    await using br = await startBroker({ VMQTT_ADMIN_PORT: '0', VMQTT_ADMIN_HOST: '127.0.0.1', VMQTT_ADMIN_TOKEN: TOKEN, ...env })
    const admin = startAdmin(br.broker)!
    try {
      await body((path, init) => fetch(`http://127.0.0.1:${admin.port}${path}`, init), br.port)
    } finally {
      admin.stop()
    }
  }
  const bearer = (token = TOKEN) => ({ method: 'DELETE', headers: { authorization: `Bearer ${token}` } })
  const auditLines = (file: string) => existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) : []

  test('clients "." and ".." are kicked with DELETE /api/v1/clients?id= (a real HTTP request)', async () => {
    await withAdmin({}, async (api, port) => {
      for (const id of ['.', '..']) {
        const { client } = await RawClient.open(port, { version: 5, clientId: id })
        const r = await api(`/api/v1/clients?id=${encodeURIComponent(id)}`, bearer())
        expect([r.status, await r.json()]).toEqual([200, { kicked: id }])
        expect(((await client.nextOf('disconnect')) as { reasonCode?: number }).reasonCode).toBe(0x98)
      }
      expect((await api('/api/v1/clients', bearer())).status).toBe(400)
    })
  })

  test('/health and /ready show only their status without a token; /api/v1/stats has version, uptime and counts', async () => {
    await withAdmin({}, async (api) => {
      expect(await (await api('/health')).json()).toEqual({ status: 'ok' })
      expect(await (await api('/ready')).json()).toEqual({ ready: true })
      const stats = await (await api('/api/v1/stats', { headers: { authorization: `Bearer ${TOKEN}` } })).json() as Record<string, unknown>
      expect(Object.keys(stats)).toEqual(expect.arrayContaining(['version', 'uptime', 'connections', 'sessions']))
    })
  })

  test('wrong admin tokens are audited, at most 10 lines a second per address', async () => {
    const audit = fresh('audit.log')
    await withAdmin({ VMQTT_AUDIT_LOG: audit }, async (api) => {
      for (let i = 0; i < 25; i++) expect((await api('/api/v1/clients/x', bearer(`wrong-${i}`))).status).toBe(401)
      const failed = auditLines(audit).filter((l) => l.event === 'admin' && l.action === 'auth-failed')
      expect(failed.length).toBeGreaterThanOrEqual(1)
      expect(failed.length).toBeLessThanOrEqual(20)
      expect(failed[0]).toMatchObject({ address: '127.0.0.1', listener: 'admin', method: 'DELETE' })
      expect(JSON.stringify(failed)).not.toContain('wrong-')
    })
  })

  test('connect-failed lines: at most 10 a second per address', async () => {
    const audit = fresh('audit.log')
    await using br = await startBroker({ VMQTT_AUDIT_LOG: audit })
    for (let i = 0; i < 30; i++) {
      // v3.1.1: an empty client id with clean session 0 is refused at once (0x02)
      const { client } = await RawClient.open(br.port, { version: 4, clientId: '', clean: false })
      await client.closed()
    }
    const refused = await (async () => { await until('audit lines', () => auditLines(audit).some((l) => l.event === 'connect-failed')); return auditLines(audit).filter((l) => l.event === 'connect-failed') })()
    expect(refused.length).toBeLessThanOrEqual(20)
    expect(refused.length).toBeGreaterThanOrEqual(10)
  })

  test('a refused CONNECT with a 60 KiB client id and will topic writes a line of under 2 KiB', async () => {
    const audit = fresh('audit.log')
    await using br = await startBroker({ VMQTT_AUDIT_LOG: audit })
    const { client } = await RawClient.open(br.port, { version: 5, clientId: 'y'.repeat(60_000), will: { topic: `a/+/${'z'.repeat(60_000)}`, payload: '' } })
    await client.closed()
    await until('the refusal line', () => auditLines(audit).some((l) => l.event === 'connect-failed'))
    expect(readFileSync(audit).length).toBeLessThan(2048)
  })

  test('a takeover kick line names the taker\'s username', async () => {
    const audit = fresh('audit.log')
    await using br = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_AUDIT_LOG: audit, VMQTT_SESSION_TAKEOVER_ACROSS_USERS: 'true', ...AUTH })
    const a = await open(br.port, { version: 5, clientId: 'shared', ...login('alice') })
    const bob = await open(br.port, { version: 5, clientId: 'shared', ...login('bob') })
    expect([a.code, bob.code]).toEqual([0, 0])
    await a.c.nextOf('disconnect')
    expect(auditLines(audit)).toContainEqual(expect.objectContaining({ event: 'kick', username: 'alice', reason: 'session taken over', byUsername: 'bob' }))
    await bob.c.close()
  })

  test('"too many subscriptions" is logged once per SUBSCRIBE packet', async () => {
    const cap = captureLog()
    await using br = await startBroker({ VMQTT_LIMITS_MAX_SUBSCRIPTIONS: '1' }, { log: cap.log })
    const { client } = await RawClient.open(br.port, { version: 5, clientId: 'many' })
    client.send(b.subscribe(1, Array.from({ length: 50 }, (_, i) => `t/${i}`), { version: 5 }))
    await client.nextOf('suback')
    expect(cap.matching('too many subscriptions').length).toBe(1)
    await client.close()
  })
})

describe('file modes (umask 0)', () => {
  test('vmqtt.db, its -wal and -shm, and the audit log are created 0600', async () => {
    const data = fresh('data')
    const audit = fresh('audit.log')
    const old = process.umask(0)
    try {
      await using br = await startBroker({ VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: data, VMQTT_AUDIT_LOG: audit })
      const { client } = await RawClient.open(br.port, { version: 5, clientId: 'files', clean: false, properties: { sessionExpiry: 60 } })
      await client.close()
      br.broker.commits.flush()
      // EXCLUSIVE locking keeps the WAL index in memory: a -shm file appears only without it
      const files = ['vmqtt.db', 'vmqtt.db-wal', ...(existsSync(join(data, 'vmqtt.db-shm')) ? ['vmqtt.db-shm'] : [])]
      for (const f of files) expect([f, (statSync(join(data, f)).mode & 0o777).toString(8)]).toEqual([f, '600'])
      expect((statSync(audit).mode & 0o777).toString(8)).toBe('600')
    } finally {
      process.umask(old)
    }
  })
})

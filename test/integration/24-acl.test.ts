/**
 * The ACL rules file (VMQTT_ACL_FILE) over real sockets, MQTT 3.1.1 and 5: %u / %c
 * placeholders, a deny rule overlapping a wider allow, retained messages, shared subscriptions,
 * will topics, a rules file re-read without restart, ip: conditions, and the audit log.
 *
 * Refusals: v5 SUBACK 0x87 / v3 0x80 (only when no topic the filter can match is readable);
 * v5 PUBACK 0x87 / v3 a normal PUBACK and the message is dropped; a denied will topic: CONNACK 0x87 / 5. Absence of a message is shown by order (a
 * later allowed message from the same publisher arrives first) or by a PINGRESP (retained
 * messages are sent before it), never by waiting.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { accepted, aclFileIn, attempt, lastClientId, nextMessage, passwdFile, publish1, pw, SUB_REFUSED, subackCodes, subscribeCollect } from '../helpers/acl-clients.ts'
import * as b from '../helpers/packet-builder.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

const VERSIONS = [4, 5] as const
const PUB_REFUSED = { 4: 0, 5: 0x87 } as const // v3 has no way to say no: a normal PUBACK
const NOT_AUTHORIZED = { 4: 5, 5: 0x87 } as const

let dir = ''
/** alice, bob and admin (acl-clients.ts). */
let passwd = ''

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vmqtt-24-acl-'))
  passwd = await passwdFile(mkdtempSync(join(dir, 'passwd-')), ['alice', 'bob', 'admin'])
})

afterAll(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true })
})

const aclFile = (text: string) => aclFileIn(dir, text)

/** A broker with the password file, the rules file and no failed-login delay. */
const env = (acl: string, extra: Record<string, string> = {}) =>
  ({ VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_ACL_FILE: acl, VMQTT_AUTH_FAIL_DELAY: '0', ...extra })

const PLACEHOLDERS = `
default deny
allow user:admin all #
allow all all users/%u/#
allow all all clients/%c/#
`

for (const version of VERSIONS) {
  describe(`ACL v${version}`, () => {
    test('%u: alice may subscribe and publish under users/alice/, not users/bob/', async () => {
      await using br = await startBroker(env(aclFile(PLACEHOLDERS)))
      const admin = await accepted(br.port, { version, user: 'admin' })
      expect(await subackCodes(admin, version, ['#'])).toEqual([1])
      const alice = await accepted(br.port, { version, user: 'alice' })
      // users/+/x and users/# are granted (alice may read some of their topics), users/bob/# is not
      expect(await subackCodes(alice, version, ['users/alice/#', 'users/bob/#', 'users/+/x', 'users/#'])).toEqual([1, SUB_REFUSED[version], 1, 1])
      expect(await publish1(alice, version, 'users/bob/x', 'to-bob')).toBe(PUB_REFUSED[version])
      alice.send(b.publish({ topic: 'users/bob/y', payload: 'qos0-to-bob', version })) // QoS 0: dropped
      expect(await publish1(alice, version, 'users/alice/x', 'own')).toBe(0)
      // admin may see everything, yet the first message it gets is alice's allowed one
      expect(await nextMessage(admin)).toEqual(['users/alice/x', 'own'])
      // alice's own subscription delivers it to her too
      expect(await nextMessage(alice)).toEqual(['users/alice/x', 'own'])
      // bob's topics match users/# and users/+/x but are not delivered to alice
      expect(await publish1(admin, version, 'users/bob/x', 'for-bob')).toBe(0)
      expect(await publish1(admin, version, 'users/alice/z', 'for-alice')).toBe(0)
      expect(await nextMessage(alice)).toEqual(['users/alice/z', 'for-alice'])
      await alice.close()
      await admin.close()
    })

    test('%c: the client id in a rule; anonymous clients have no %u', async () => {
      await using br = await startBroker(env(aclFile(PLACEHOLDERS), { VMQTT_AUTH_ANONYMOUS: 'true' }))
      const admin = await accepted(br.port, { version, user: 'admin' })
      expect(await subackCodes(admin, version, ['#'])).toEqual([1])
      const dev = await accepted(br.port, { version, clientId: 'dev-1' })
      expect(await subackCodes(dev, version, ['clients/dev-1/#', 'clients/dev-2/#', 'users/dev-1/#'])).toEqual([1, SUB_REFUSED[version], SUB_REFUSED[version]])
      expect(await publish1(dev, version, 'clients/dev-2/x', 'other')).toBe(PUB_REFUSED[version])
      expect(await publish1(dev, version, 'clients/dev-1/x', 'own')).toBe(0)
      expect(await nextMessage(admin)).toEqual(['clients/dev-1/x', 'own'])
      await dev.close()
      await admin.close()
    })

    test('a deny rule before a wider allow: # is granted and filtered, filters inside the denied part are refused', async () => {
      await using br = await startBroker({ VMQTT_ACL_FILE: aclFile('deny all all secret/#\nallow all all #\n') })
      const c = await accepted(br.port, { version }) // no authenticator: anonymous auto → on
      expect(await subackCodes(c, version, ['#', 'public/#', 'secret/x', '+/x', 'public/+/y', 'secret', 'secret/#'])).toEqual([
        1, 1, SUB_REFUSED[version], 1, 1, SUB_REFUSED[version], SUB_REFUSED[version],
      ])
      expect(await publish1(c, version, 'secret/x', 's')).toBe(PUB_REFUSED[version])
      expect(await publish1(c, version, 'public/x', 'p')).toBe(0)
      expect(await nextMessage(c)).toEqual(['public/x', 'p']) // once, via #, public/# and +/x
      await c.close()
    })

    test('retained: a denied topic cannot be planted, and no retained message comes from a topic the subscriber may not read', async () => {
      const rules = 'allow user:admin all #\ndeny all all secret/#\nallow all all #\n'
      await using br = await startBroker(env(aclFile(rules)))
      const alice = await accepted(br.port, { version, user: 'alice' })
      expect(await publish1(alice, version, 'secret/planted', 'by-alice', true)).toBe(PUB_REFUSED[version])
      expect(await publish1(alice, version, 'public/a', 'by-alice', true)).toBe(0)
      const admin = await accepted(br.port, { version, user: 'admin' })
      expect(await publish1(admin, version, 'secret/b', 'by-admin', true)).toBe(0)
      expect(await publish1(admin, version, 'public/b', 'by-admin', true)).toBe(0)
      // admin sees every retained message there is: alice's secret one was never stored
      expect(await subscribeCollect(admin, version, ['#'])).toEqual([[1], [['public/a', 'by-alice'], ['public/b', 'by-admin'], ['secret/b', 'by-admin']]])
      const bob = await accepted(br.port, { version, user: 'bob' })
      const [codes, msgs] = await subscribeCollect(bob, version, ['#', 'secret/#', '+/b', 'public/#'])
      expect(codes).toEqual([1, SUB_REFUSED[version], 1, 1])
      // secret/b matches # and +/b: bob may not read it
      expect(msgs).toEqual([['public/a', 'by-alice'], ['public/b', 'by-admin']])
      await bob.close()
      await admin.close()
      await alice.close()
    })

    test('a shared subscription is checked by its filter: $share/g/secret/x is refused like secret/x, $share/g/# granted like #', async () => {
      await using br = await startBroker({ VMQTT_ACL_FILE: aclFile('deny all all secret/#\nallow all all #\n') })
      const c = await accepted(br.port, { version })
      expect(await subackCodes(c, version, ['$share/g/secret/x', 'secret/x', '$share/g/public/x', '$share/g/#'])).toEqual([
        SUB_REFUSED[version], SUB_REFUSED[version], 1, 1,
      ])
      await c.close()
    })

    test('a will topic the ACL denies: CONNACK 0x87 / 5; an allowed one connects', async () => {
      await using br = await startBroker(env(aclFile(PLACEHOLDERS)))
      const denied = await attempt(br.port, { version, user: 'alice', will: { topic: 'users/bob/status', payload: 'gone' } })
      expect(denied.code).toBe(NOT_AUTHORIZED[version])
      await denied.c.closed()
      const ok = await accepted(br.port, { version, user: 'alice', will: { topic: 'users/alice/status', payload: 'gone' } })
      await ok.close()
    })

    test('rules re-read without restart: bob is allowed once the file says so', async () => {
      const file = aclFile('allow all all users/%u/#\n')
      await using br = await startBroker(env(file))
      const bob = await accepted(br.port, { version, user: 'bob' })
      expect(await subackCodes(bob, version, ['shared/#'])).toEqual([SUB_REFUSED[version]])
      writeFileSync(file, 'allow all all users/%u/#\nallow user:bob all shared/#\n')
      await until('bob\'s subscription to be granted after the rules changed',
        async () => (await subackCodes(bob, version, ['shared/#']))[0] === 1)
      // the same connection may now publish there too
      expect(await publish1(bob, version, 'shared/x', 'hello')).toBe(0)
      expect(await nextMessage(bob)).toEqual(['shared/x', 'hello'])
      // alice is still not
      const alice = await accepted(br.port, { version, user: 'alice' })
      expect(await subackCodes(alice, version, ['shared/#'])).toEqual([SUB_REFUSED[version]])
      await alice.close()
      await bob.close()
    })

    test('a right revoked by a rules change ends the existing subscription at once', async () => {
      const file = aclFile('allow all all users/%u/#\nallow user:bob all shared/#\n')
      await using br = await startBroker(env(file))
      const bob = await accepted(br.port, { version, user: 'bob' })
      expect(await subackCodes(bob, version, ['shared/#', 'users/bob/#'])).toEqual([1, 1])
      writeFileSync(file, 'allow all all users/%u/#\n')
      const session = () => br.broker.connectionOf(br.broker.allConnections().find((c) => c.username === 'bob')!.clientId)!.session!
      await until('bob\'s shared/# subscription to be removed', () => session().getSubscription('shared/#') === undefined)
      expect(session().getSubscription('users/bob/#')).toBeDefined()
      // the allowed one still works
      expect(await publish1(bob, version, 'users/bob/x', 'still')).toBe(0)
      expect(await nextMessage(bob)).toEqual(['users/bob/x', 'still'])
      await bob.close()
    })

    test('ip: rules: allowed from 127.0.0.1, refused from 127.0.0.2', async () => {
      const rules = 'allow ip:127.0.0.1 all local/#\nallow ip:10.0.0.0/8,user:admin all #\nallow user:alice,ip:127.0.0.0/24 all lan/#\n'
      await using br = await startBroker(env(aclFile(rules), { VMQTT_AUTH_ANONYMOUS: 'true' }))
      const here = await accepted(br.port, { version })
      const there = await accepted(br.port, { version, from: '127.0.0.2' })
      expect(br.broker.connectionOf(lastClientId())?.socket.remoteAddress).toBe('127.0.0.2')
      expect(await subackCodes(here, version, ['local/#'])).toEqual([1])
      expect(await subackCodes(there, version, ['local/#'])).toEqual([SUB_REFUSED[version]])
      expect(await publish1(there, version, 'local/x', 'from-2')).toBe(PUB_REFUSED[version])
      expect(await publish1(here, version, 'local/x', 'from-1')).toBe(0)
      expect(await nextMessage(here)).toEqual(['local/x', 'from-1'])
      // several conditions must all hold: admin is not in 10/8, alice is in 127.0.0.0/24 from either address
      const admin = await accepted(br.port, { version, user: 'admin' })
      expect(await subackCodes(admin, version, ['admin/#'])).toEqual([SUB_REFUSED[version]])
      const alice2 = await accepted(br.port, { version, user: 'alice', from: '127.0.0.2' })
      expect(await subackCodes(alice2, version, ['lan/#', 'local/#'])).toEqual([1, SUB_REFUSED[version]])
      for (const c of [here, there, admin, alice2]) await c.close()
    })
  })
}

describe('sessions resumed under other rules or by another user', () => {
  for (const version of VERSIONS) {
    test(`v${version}: taking over alice's client id as bob keeps none of her subscriptions or queued messages`, async () => {
      // another user's session is refused by default (37-identity); this is about what a permitted takeover keeps
      await using br = await startBroker(env(aclFile('allow all all users/%u/#\nallow user:admin all #\n'), { VMQTT_SESSION_TAKEOVER_ACROSS_USERS: 'true' }))
      const alice = await accepted(br.port, { version, user: 'alice', clientId: `phone-${version}`, persistent: true })
      expect(await subackCodes(alice, version, ['users/alice/#'])).toEqual([1])
      await alice.close()
      const admin = await accepted(br.port, { version, user: 'admin' })
      expect(await publish1(admin, version, 'users/alice/diary', 'queued while away')).toBe(0)
      const bob = await accepted(br.port, { version, user: 'bob', clientId: `phone-${version}`, persistent: true })
      expect(br.broker.connectionOf(`phone-${version}`)!.session!.getSubscription('users/alice/#')).toBeUndefined()
      expect(await publish1(admin, version, 'users/alice/diary', 'live')).toBe(0)
      // nothing of alice's arrives: neither the queued message nor the live one
      await bob.expectNothing(200)
      await bob.close()
      await admin.close()
    })

    test(`v${version}: a right revoked while the client was away is gone when it resumes`, async () => {
      const file = aclFile('allow all all users/%u/#\nallow user:alice all secret/#\nallow user:admin all #\n')
      await using br = await startBroker(env(file))
      const alice = await accepted(br.port, { version, user: 'alice', clientId: `away-${version}`, persistent: true })
      expect(await subackCodes(alice, version, ['secret/#', 'users/alice/#'])).toEqual([1, 1])
      await alice.close()
      const admin = await accepted(br.port, { version, user: 'admin' })
      expect(await publish1(admin, version, 'secret/plans', 'before revocation')).toBe(0)
      expect(await publish1(admin, version, 'users/alice/x', 'still hers')).toBe(0)
      writeFileSync(file, 'allow all all users/%u/#\nallow user:admin all #\n')
      expect(await br.broker.reload()).toEqual([])
      const back = await accepted(br.port, { version, user: 'alice', clientId: `away-${version}`, persistent: true })
      expect(await nextMessage(back)).toEqual(['users/alice/x', 'still hers'])
      await back.expectNothing(200)
      const s = br.broker.connectionOf(`away-${version}`)!.session!
      expect([s.getSubscription('secret/#'), s.getSubscription('users/alice/#') !== undefined]).toEqual([undefined, true])
      await back.close()
      await admin.close()
    })
  }
})

describe('ACL audit', () => {
  function readAudit(file: string): Record<string, unknown>[] {
    if (!existsSync(file)) return []
    return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
  }

  test('acl-denied lines name the action and the topic (publish, subscribe, shared subscribe)', async () => {
    const log = join(mkdtempSync(join(dir, 'audit-')), 'audit.jsonl')
    await using br = await startBroker(env(aclFile(PLACEHOLDERS), { VMQTT_AUDIT_LOG: log }))
    const alice = await accepted(br.port, { version: 5, user: 'alice', clientId: 'audit-alice' })
    expect(await publish1(alice, 5, 'users/bob/x', 'no')).toBe(0x87)
    expect(await subackCodes(alice, 5, ['users/bob/#', '$share/g/users/bob/#', 'users/alice/#'])).toEqual([0x87, 0x87, 1])
    const bob = await accepted(br.port, { version: 4, user: 'bob', clientId: 'audit-bob' })
    expect(await publish1(bob, 4, 'users/alice/x', 'no')).toBe(0)
    await until('four acl-denied lines', () => readAudit(log).filter((l) => l.event === 'acl-denied').length >= 4)
    const denied = readAudit(log).filter((l) => l.event === 'acl-denied')
    const base = { event: 'acl-denied', clientId: 'audit-alice', username: 'alice', address: '127.0.0.1', listener: 'mqtt' }
    expect(denied).toEqual([
      expect.objectContaining({ ...base, action: 'publish', topic: 'users/bob/x' }),
      expect.objectContaining({ ...base, action: 'subscribe', topic: 'users/bob/#' }),
      expect.objectContaining({ ...base, action: 'subscribe', topic: '$share/g/users/bob/#' }),
      expect.objectContaining({ ...base, clientId: 'audit-bob', username: 'bob', action: 'publish', topic: 'users/alice/x' }),
    ])
    for (const l of denied) expect(typeof l.time).toBe('string')
    // the allowed subscription and the payloads are not in the log; nor are passwords
    const text = readFileSync(log, 'utf8')
    expect(text).not.toContain('users/alice/#')
    expect(text).not.toContain(pw('alice'))
    await bob.close()
    await alice.close()
  })

  test('a flood of denials is cut to 10 lines per second per connection; the next line says how many were left out', async () => {
    const log = join(mkdtempSync(join(dir, 'audit-')), 'audit.jsonl')
    await using br = await startBroker(env(aclFile(PLACEHOLDERS), { VMQTT_AUDIT_LOG: log }))
    const alice = await accepted(br.port, { version: 5, user: 'alice', clientId: 'flooder' })
    for (let i = 0; i < 200; i++) alice.send(b.publish({ topic: `users/bob/${i}`, payload: 'x', version: 5 }))
    expect(await publish1(alice, 5, 'users/alice/ok', 'sync')).toBe(0)
    const lines = () => readAudit(log).filter((l) => l.event === 'acl-denied' && l.clientId === 'flooder')
    expect(lines().length).toBeLessThanOrEqual(20)
    expect(lines().length).toBeGreaterThanOrEqual(10)
    // a second later, the next denial is logged with the count of those left out
    await until('the next one-second window', async () => {
      expect(await publish1(alice, 5, 'users/bob/later', 'no')).toBe(0x87)
      return lines().some((l) => typeof l.suppressed === 'number')
    })
    const withCount = lines().find((l) => typeof l.suppressed === 'number')!
    expect(withCount.suppressed as number).toBeGreaterThanOrEqual(150)
    await alice.close()
  })
})

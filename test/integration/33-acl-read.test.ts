/**
 * ACL read access per delivered message (issue 13, section 2), MQTT 3.1.1 and 5, over real
 * sockets: a wildcard subscription is granted when some topic it can match is readable, and
 * each message is checked: live, shared-subscription, retained, queued for an offline session,
 * resent on resumption, under rules changed at run time, and with a token's own lists (JWT).
 *
 * Absence of a message is shown by order (a later allowed message from the same publisher
 * arrives first) or by a PINGRESP (retained messages are sent before it), never by waiting.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import mqtt from 'mqtt'
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet'
import { accepted, aclFileIn, nextMessage, passwdFile, publish1, SUB_REFUSED, subackCodes, subscribeCollect, type V } from '../helpers/acl-clients.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
const SECRET = 'a-test-secret-of-at-least-32-bytes-for-hs256'

let dir = ''
let passwd = ''

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vmqtt-33-acl-read-'))
  passwd = await passwdFile(mkdtempSync(join(dir, 'passwd-')), ['alice', 'bob', 'admin'])
})

afterAll(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true })
})

const aclFile = (text: string) => aclFileIn(dir, text)
const env = (acl: string) => ({ VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_ACL_FILE: acl, VMQTT_AUTH_FAIL_DELAY: '0' })
const USERS = 'allow user:admin all #\nallow all all users/%u/#\n'

/** The next PUBLISH, not acknowledged (it stays in flight). */
async function unacked(c: RawClient): Promise<[string, string]> {
  const p = (await c.nextOf('publish')) as IPublishPacket
  return [p.topic, p.payload.toString()]
}

for (const version of VERSIONS) {
  describe(`ACL read access v${version}`, () => {
    test('the interoperability suite\'s rules (deny subscribe test/nosubscribe, default allow): # granted, test/nosubscribe refused and never delivered', async () => {
      await using br = await startBroker({ VMQTT_ACL_FILE: aclFile('deny all subscribe test/nosubscribe\ndefault allow\n') })
      const c = await accepted(br.port, { version })
      expect(await subackCodes(c, version, ['#', 'test/nosubscribe', 'test/+', '+/+'])).toEqual([1, SUB_REFUSED[version], 1, 1])
      const p = await accepted(br.port, { version })
      // publishing there is allowed (the rule is for subscribe); # and test/+ match it, yet it is not delivered
      expect(await publish1(p, version, 'test/nosubscribe', 'hidden')).toBe(0)
      expect(await publish1(p, version, 'test/other', 'seen')).toBe(0)
      expect(await nextMessage(c)).toEqual(['test/other', 'seen'])
      await p.close()
      await c.close()
    })

    test('a shared subscription gives each message to a member that may read it, or to none', async () => {
      await using br = await startBroker(env(aclFile(USERS)))
      const alice = await accepted(br.port, { version, user: 'alice' })
      const bob = await accepted(br.port, { version, user: 'bob' })
      expect(await subackCodes(alice, version, ['$share/g/users/#'])).toEqual([1])
      expect(await subackCodes(bob, version, ['$share/g/users/#'])).toEqual([1])
      const admin = await accepted(br.port, { version, user: 'admin' })
      for (let i = 1; i <= 3; i++) {
        for (const who of ['alice', 'bob', 'carol']) expect(await publish1(admin, version, `users/${who}/${i}`, who)).toBe(0)
      }
      // round robin would alternate; each member gets exactly the messages it may read, carol's go to nobody
      const got = async (c: RawClient) => [await nextMessage(c), await nextMessage(c), await nextMessage(c)].map(([t]) => t)
      expect(await got(alice)).toEqual(['users/alice/1', 'users/alice/2', 'users/alice/3'])
      expect(await got(bob)).toEqual(['users/bob/1', 'users/bob/2', 'users/bob/3'])
      for (const c of [alice, bob, admin]) await c.close()
    })

    test('an offline session queues only what its client may read, and resumes with it', async () => {
      await using br = await startBroker(env(aclFile(USERS)))
      const id = `away-${version}`
      const alice = await accepted(br.port, { version, user: 'alice', clientId: id, persistent: true })
      expect(await subackCodes(alice, version, ['users/#'])).toEqual([1])
      await alice.close()
      const admin = await accepted(br.port, { version, user: 'admin' })
      expect(await publish1(admin, version, 'users/bob/x', 'bob\'s')).toBe(0)
      expect(await publish1(admin, version, 'users/alice/x', 'hers')).toBe(0)
      expect(br.broker.sessions.get(id)!.queuedCount).toBe(1)
      const back = await accepted(br.port, { version, user: 'alice', clientId: id, persistent: true })
      expect(await publish1(admin, version, 'users/alice/live', 'live')).toBe(0)
      expect(await nextMessage(back)).toEqual(['users/alice/x', 'hers'])
      expect(await nextMessage(back)).toEqual(['users/alice/live', 'live'])
      await back.close()
      await admin.close()
    })

    test('rules changed while the client was away: # is kept, queued and unacknowledged messages it may no longer read are dropped', async () => {
      const file = aclFile('allow all all #\n')
      await using br = await startBroker({ VMQTT_ACL_FILE: file })
      const id = `changed-${version}`
      const c = await accepted(br.port, { version, clientId: id, persistent: true })
      expect(await subackCodes(c, version, ['#'])).toEqual([1])
      const p = await accepted(br.port, { version })
      expect(await publish1(p, version, 'b/0', 'in flight')).toBe(0)
      expect(await unacked(c)).toEqual(['b/0', 'in flight'])
      await c.close()
      expect(await publish1(p, version, 'b/1', 'queued')).toBe(0)
      expect(await publish1(p, version, 'a/1', 'queued')).toBe(0)
      writeFileSync(file, 'deny all subscribe b/#\nallow all all #\n')
      expect(await br.broker.reload()).toEqual([])
      const back = await accepted(br.port, { version, clientId: id, persistent: true })
      expect(br.broker.sessions.get(id)!.getSubscription('#')).toBeDefined()
      expect(await publish1(p, version, 'b/2', 'live')).toBe(0)
      expect(await publish1(p, version, 'a/2', 'live')).toBe(0)
      // no resend of b/0 (DUP), no b/1, no b/2
      expect(await nextMessage(back)).toEqual(['a/1', 'queued'])
      expect(await nextMessage(back)).toEqual(['a/2', 'live'])
      await back.close()
      await p.close()
    })

    test('a rules change applies to the next message of a live # subscriber (cached decisions are dropped)', async () => {
      const file = aclFile('allow all all #\n')
      await using br = await startBroker({ VMQTT_ACL_FILE: file })
      const c = await accepted(br.port, { version })
      expect(await subackCodes(c, version, ['#'])).toEqual([1])
      const p = await accepted(br.port, { version })
      expect(await publish1(p, version, 'x/1', 'before')).toBe(0)
      expect(await nextMessage(c)).toEqual(['x/1', 'before'])
      writeFileSync(file, 'deny all subscribe x/#\nallow all all #\n')
      expect(await br.broker.reload()).toEqual([])
      expect(await publish1(p, version, 'x/1', 'after')).toBe(0)
      expect(await publish1(p, version, 'y/1', 'after')).toBe(0)
      expect(await nextMessage(c)).toEqual(['y/1', 'after'])
      await p.close()
      await c.close()
    })

    test('a token\'s own lists (JWT acl claim): # granted, only the listed topics delivered, live and retained', async () => {
      await using br = await startBroker({ VMQTT_AUTH_JWT_SECRET: SECRET, VMQTT_AUTH_FAIL_DELAY: '0' })
      const key = new TextEncoder().encode(SECRET)
      const login = async (user: string, acl: { publish: string[]; subscribe: string[] }) => {
        const token = await new SignJWT({ acl }).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setExpirationTime('1h').sign(key)
        const { client, connack } = await RawClient.open(br.port, { version, clientId: `jwt-${user}-${version}`, username: user, password: token })
        const ack = connack as IConnackPacket
        expect(version === 5 ? ack.reasonCode : ack.returnCode).toBe(0)
        return client
      }
      const pub = await login('sender', { publish: ['cmd/#'], subscribe: [] })
      expect(await publish1(pub, version, 'cmd/bob/r', 'bob retained', true)).toBe(0)
      expect(await publish1(pub, version, 'cmd/carol/r', 'carol retained', true)).toBe(0)
      const carol = await login('carol', { publish: [], subscribe: ['cmd/%u/+'] })
      expect(await subscribeCollect(carol, version, ['#'])).toEqual([[1], [['cmd/carol/r', 'carol retained']]])
      expect(await subackCodes(carol, version, ['other/#', 'cmd/+/x'])).toEqual([SUB_REFUSED[version], 1])
      expect(await publish1(pub, version, 'cmd/bob/x', 'bob')).toBe(0)
      expect(await publish1(pub, version, 'cmd/carol/x', 'carol')).toBe(0)
      expect(await nextMessage(carol)).toEqual(['cmd/carol/x', 'carol'])
      await carol.close()
      await pub.close()
    })
  })
}

describe('MQTT.js with the interoperability suite\'s rules', () => {
  for (const protocolVersion of VERSIONS) {
    test(`MQTT.js v${protocolVersion}: # granted and filtered, test/nosubscribe refused (${protocolVersion === 5 ? '0x87' : '0x80'})`, async () => {
      await using br = await startBroker({ VMQTT_ACL_FILE: aclFile('deny all subscribe test/nosubscribe\ndefault allow\n') })
      const opts = { protocolVersion, reconnectPeriod: 0 } as const
      const sub = await mqtt.connectAsync(br.url, { ...opts, clientId: `mqttjs-sub-${protocolVersion}` })
      const pub = await mqtt.connectAsync(br.url, { ...opts, clientId: `mqttjs-pub-${protocolVersion}` })
      try {
        const topics: string[] = []
        let seen!: () => void
        const other = new Promise<void>((resolve) => { seen = resolve })
        sub.on('message', (topic) => { topics.push(topic); if (topic === 'test/other') seen() })
        expect((await sub.subscribeAsync('#', { qos: 1 })).map((g) => g.qos)).toEqual([1])
        // MQTT.js rejects a refused subscription, naming the reason code (0x87 / 0x80)
        const refused = await sub.subscribeAsync('test/nosubscribe', { qos: 1 }).then(() => 'granted', (e: Error) => e.message)
        expect(refused).toBe(protocolVersion === 5 ? 'Subscribe error: Not authorized' : 'Subscribe error: Unspecified error')
        await pub.publishAsync('test/nosubscribe', 'hidden', { qos: 1 })
        await pub.publishAsync('test/other', 'seen', { qos: 1 })
        await other
        expect(topics).toEqual(['test/other'])
      } finally {
        await Promise.all([sub.endAsync(), pub.endAsync()])
      }
    })
  }
})

/** For the bench's A/B and the README: an ACL costs one cached flag per subscription and topic. */
describe('ACL read decisions are cached', () => {
  test('a subscription keeps the rules that can decide for its topics: none when a deny rule cannot reach them; messages are not checked through authorize', async () => {
    await using br = await startBroker({ VMQTT_ACL_FILE: aclFile('deny all all secret/#\nallow all all clients/%c/#\nallow all all #\n') })
    const c = await accepted(br.port, { version: 5 as V, clientId: 'kept' })
    expect(await subackCodes(c, 5, ['#', 'fan/#'])).toEqual([1, 1])
    const p = await accepted(br.port, { version: 5 as V })
    const sec = br.broker.security!
    let checks = 0
    const authorize = sec.authorize.bind(sec)
    sec.authorize = (who, action, topic) => { if (action === 'read') checks++; return authorize(who, action, topic) }
    for (let i = 0; i < 5; i++) p.send(b.publish({ topic: `fan/dev${i}`, payload: `${i}`, version: 5 }))
    expect(await publish1(p, 5, 'fan/out', 'last')).toBe(0)
    for (let i = 0; i < 5; i++) expect(await nextMessage(c)).toEqual([`fan/dev${i}`, `${i}`])
    expect(await nextMessage(c)).toEqual(['fan/out', 'last'])
    expect(checks).toBe(0)
    const s = br.broker.sessions.get('kept')!
    // fan/#: no deny rule overlaps it, all its topics are readable
    expect(s.getSubscription('fan/#')!.read!.rules).toBeNull()
    // #: the deny rule, the client's own allow and the allow that covers it, in order
    expect(s.getSubscription('#')!.read!.rules!.rules.map((r) => [r.allow, r.levels.join('/')])).toEqual([[false, 'secret/#'], [true, 'clients/kept/#'], [true, '#']])
    await p.close()
    await c.close()
  })

  test('publish decisions are cached per client and topic, and made again when the rules change', async () => {
    const file = aclFile('deny all publish p/#\nallow all all #\n')
    await using br = await startBroker({ VMQTT_ACL_FILE: file })
    const c = await accepted(br.port, { version: 5 as V })
    expect(await subackCodes(c, 5, ['#'])).toEqual([1])
    const p = await accepted(br.port, { version: 5 as V })
    expect(await publish1(p, 5, 'p/1', 'denied')).toBe(0x87)
    expect(await publish1(p, 5, 'p/1', 'denied again')).toBe(0x87)
    writeFileSync(file, 'allow all all #\n')
    expect(await br.broker.reload()).toEqual([])
    expect(await publish1(p, 5, 'p/1', 'allowed')).toBe(0)
    expect(await nextMessage(c)).toEqual(['p/1', 'allowed'])
    await p.close()
    await c.close()
  })
})

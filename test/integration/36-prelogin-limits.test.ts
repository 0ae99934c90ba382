/**
 * Issue 13 section 4: before login, bounded memory, bounded CPU, no stalls. A CONNECT or AUTH
 * larger than limits.maxConnectPacketSize is refused as soon as its length is read; no packet
 * with millions of properties or filters blocks the event loop; password checks are capped and
 * queued; failed-login delays are per address and username.
 */
import { describe, expect, test } from 'bun:test'
import { connectWithProps, publishWithProps, subscribeMany, subscribeWithProps, userProps } from '../helpers/big-packets.ts'
import { guessers, spyVerify, timedLogin } from '../helpers/guessers.ts'
import * as b from '../helpers/packet-builder.ts'
import { passwdFile } from '../helpers/passwd-file.ts'
import { pingWatch } from '../helpers/ping-watch.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

/** The longest ping round trip (ms) allowed while a hostile packet is handled. The issue asks for
 * ~10 ms (scripts/prelogin-probe.ts measures it in a separate process); in-process on a loaded
 * 2-core CI machine this leaves room, and before the caps each case took 800 ms to 7 s. */
const MAX_PING_MS = 600

/** The fixed header of a CONNECT claiming `length` bytes, then the start of a v5 or v3.1.1 variable header. */
const connectHeader = (length: number, level: 4 | 5) => Buffer.from([0x10, ...b.varint(length), ...b.str('MQTT'), level, 0x02, 0, 60])

describe('packets before authentication are small (limits.maxConnectPacketSize)', () => {
  test('v5: a CONNECT claiming 16,000,000 bytes gets CONNACK 0x95 as soon as its length is read', async () => {
    await using broker = await startBroker()
    const c = await RawClient.connect(broker.port, { version: 5 })
    c.send(connectHeader(16_000_000, 5))
    c.send(Buffer.alloc(256 * 1024))
    const ack = await c.nextOf('connack')
    expect(ack.cmd === 'connack' ? ack.reasonCode : -1).toBe(0x95)
    await c.closed()
    expect(broker.broker.connectionCount).toBe(0)
  })

  test('v3.1.1: the same CONNECT is closed without a CONNACK', async () => {
    await using broker = await startBroker()
    const c = await RawClient.connect(broker.port, { version: 4 })
    c.send(connectHeader(16_000_000, 4))
    await c.closed()
    await c.expectNothing(0, { allowClose: true })
  })

  test('a PUBLISH pipelined after a CONNECT that is being checked may not claim more than 1 MiB', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    await using broker = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd.path })
    const c = await RawClient.connect(broker.port, { version: 5 })
    c.send(b.connect({ version: 5, clientId: 'pipelined', username: 'alice', password: 'wonderland' }))
    c.send(Buffer.from([0x30, ...b.varint(16_000_000), ...b.str('t')]))
    c.send(Buffer.alloc(256 * 1024))
    // closed as soon as the length is read, before the password check ends: CONNACK 0x95 at most
    await c.closed()
    const answer = await c.next().then((p) => `${p.cmd} 0x${((p as { reasonCode?: number }).reasonCode ?? 0).toString(16)}`, () => 'none')
    expect(['none', 'connack 0x95']).toContain(answer)
  })

  test('the cap is 64 KiB by default and configurable', async () => {
    const props = userProps(70, 500)
    {
      await using broker = await startBroker()
      const c = await RawClient.connect(broker.port, { version: 5 })
      c.send(connectWithProps(props, 'big-connect'))
      const ack = await c.nextOf('connack')
      expect(ack.cmd === 'connack' ? ack.reasonCode : -1).toBe(0x95)
    }
    {
      await using broker = await startBroker({ VMQTT_LIMITS_MAX_CONNECT_PACKET_SIZE: '131072' })
      const c = await RawClient.connect(broker.port, { version: 5 })
      c.send(connectWithProps(props, 'big-connect'))
      const ack = await c.nextOf('connack')
      expect(ack.cmd === 'connack' ? ack.reasonCode : -1).toBe(0)
      await c.close()
    }
  })
})

describe('no packet blocks the event loop (entry caps, native UTF-8 checks)', () => {
  /** Sends `bad` from a logged-in (or not) client while a bystander pings; returns the answer and the longest ping. */
  async function whilePinging(port: number, bad: Buffer, login: boolean, watcherLogin: b.ConnectOpts = {}) {
    const { client: watcher } = await RawClient.open(port, { version: 5, clientId: 'pinger', ...watcherLogin })
    const c = login ? (await RawClient.open(port, { version: 5, clientId: 'hostile' })).client : await RawClient.connect(port, { version: 5 })
    const watch = pingWatch(watcher)
    c.send(bad)
    const answer = await c.next(20_000)
    await c.closed(20_000)
    const { maxMs, pings } = await watch.stop()
    await watcher.close()
    return { answer, maxMs, pings }
  }
  const reason = (p: { cmd: string; reasonCode?: number }) => `${p.cmd} 0x${(p.reasonCode ?? 0).toString(16)}`

  test('a 16 MiB PUBLISH with 3.3 million user properties: DISCONNECT 0x97, pings stay fast', async () => {
    await using broker = await startBroker()
    const props = userProps(Math.floor((16 * 1024 * 1024 - 64) / 5))
    const r = await whilePinging(broker.port, publishWithProps('t', props), true)
    expect(r.maxMs).toBeLessThan(MAX_PING_MS)
    expect(reason(r.answer as never)).toBe('disconnect 0x97')
  }, 30_000)

  test('a v5 CONNECT with 2.2 million user properties and wrong credentials: CONNACK 0x97, pings stay fast', async () => {
    // the CONNECT cap raised so that the property cap is what refuses it
    await using passwd = await passwdFile({ pinger: 'secret' })
    await using broker = await startBroker({ VMQTT_LIMITS_MAX_CONNECT_PACKET_SIZE: '16777216', VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_FAIL_DELAY: '0' })
    const r = await whilePinging(broker.port, connectWithProps(userProps(2_200_000), 'hostile', 'pinger', 'wrong'), false, { username: 'pinger', password: 'secret' })
    expect(r.maxMs).toBeLessThan(MAX_PING_MS)
    expect(reason(r.answer as never)).toBe('connack 0x97')
  }, 30_000)

  test('a 16 MiB SUBSCRIBE with 3 million user properties and one with 4 million filters: DISCONNECT 0x97, pings stay fast', async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_MAX_CONTROL_PACKET_SIZE: '16777216' })
    const many = await whilePinging(broker.port, subscribeMany(1, 4_000_000, true), true)
    expect(many.maxMs).toBeLessThan(MAX_PING_MS)
    expect(reason(many.answer as never)).toBe('disconnect 0x97')
    const props = await whilePinging(broker.port, subscribeWithProps(2, userProps(3_000_000)), true)
    expect(props.maxMs).toBeLessThan(MAX_PING_MS)
    expect(reason(props.answer as never)).toBe('disconnect 0x97')
  }, 60_000)

  test('packets other than PUBLISH over limits.maxControlPacketSize are refused from their length', async () => {
    await using broker = await startBroker()
    const r = await whilePinging(broker.port, subscribeMany(1, 300_000, true), true)
    expect(reason(r.answer as never)).toBe('disconnect 0x95')
  })

  test('packets within the caps still work: 1,024 user properties and 1,024 filters', async () => {
    await using broker = await startBroker()
    const { client } = await RawClient.open(broker.port, { version: 5, clientId: 'fine' })
    client.send(subscribeMany(1, 1024, true))
    const ack = await client.nextOf('suback')
    expect(ack.cmd === 'suback' ? ack.granted.length : 0).toBe(1024)
    client.send(publishWithProps('f', userProps(1024, 3)))
    const msg = await client.nextOf('publish')
    const up = msg.cmd === 'publish' ? msg.properties?.userProperties : undefined
    expect(up !== undefined && (up as Record<string, string[]>).nnn?.length).toBe(1024)
    await client.close()
  })
})

describe('password guessing: checks are capped and delayed before hashing', () => {
  test('16 parallel guessers from one address: at most 2 verifications at once and few in all; a real login from another address is served', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    // a short connect timeout: guesses that would wait past it are refused as busy at once
    await using broker = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_MAX_CONCURRENT_VERIFICATIONS: '4', VMQTT_MQTT_CONNECT_TIMEOUT: '3' })
    const spy = spyVerify()
    try {
      const stopAt = performance.now() + 3000
      const guessing = guessers(broker.port, 16, () => 'alice', stopAt)
      const real = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' }, '127.0.0.2')
      const answered = await guessing
      expect(real.code).toBe(0)
      // two guessers at most (then one, once they failed), plus the real login
      expect({ maxRunning: spy.stats.maxRunning <= 3, fewCalls: spy.stats.calls <= 8 }).toEqual({ maxRunning: true, fewCalls: true })
      expect(answered).toBeGreaterThan(0)
    } finally {
      spy.restore()
    }
  }, 20_000)

  test('a full verification queue is refused as busy at once (v5 0x89, v3 3), without a hash', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    await using broker = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_MAX_CONCURRENT_VERIFICATIONS: '1', VMQTT_AUTH_MAX_QUEUED_VERIFICATIONS: '0', VMQTT_AUTH_FAIL_DELAY: '0' })
    // two logins from two addresses at once: one verifies, the other finds no slot
    const [x, y] = await Promise.all([
      timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' }, '127.0.0.1'),
      timedLogin(broker.port, { version: 4, username: 'alice', password: 'wonderland' }, '127.0.0.2'),
    ])
    expect([x.code, y.code].sort()).toEqual(x.code === 0 ? [0, 3] : [0, 0x89])
  }, 20_000)
})

describe('failed-login delays per address and username', () => {
  const env = (passwd: string) => ({ VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_AUTH_FAIL_DELAY: '200', VMQTT_AUTH_FAIL_DELAY_MAX: '6400', VMQTT_AUTH_FAIL_DELAY_ADDRESS_MAX: '400' })

  test('after alice failed 4 times from an address, bob and an anonymous probe from there wait little; alice waits longer', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland', bob: 'builder' })
    await using broker = await startBroker({ ...env(passwd.path), VMQTT_AUTH_ANONYMOUS: 'true' })
    for (let i = 0; i < 4; i++) expect((await timedLogin(broker.port, { version: 5, username: 'alice', password: 'nope' })).code).toBe(0x86)
    const bob = await timedLogin(broker.port, { version: 5, username: 'bob', password: 'builder' })
    const probe = await timedLogin(broker.port, { version: 4 })
    const alice = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'nope' })
    expect([bob.code, probe.code, alice.code]).toEqual([0, 0, 0x86])
    // the address part: at most 400 ms (before: 3.2 s, alice's delay, for everyone)
    expect(bob.ms).toBeLessThan(1000)
    expect(probe.ms).toBeLessThan(1000)
    expect(alice.ms).toBeGreaterThanOrEqual(0.8 * 3200)
  }, 20_000)

  test('no timing oracle: an unknown user and a wrong password take the same time', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' })
    await using broker = await startBroker(env(passwd.path))
    const unknown: number[] = []
    const wrong: number[] = []
    for (let i = 0; i < 3; i++) {
      const u = await timedLogin(broker.port, { version: 5, username: 'mallory', password: 'x' }, '127.0.0.3')
      const w = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'x' }, '127.0.0.4')
      expect([u.code, w.code]).toEqual([0x86, 0x86])
      unknown.push(u.ms)
      wrong.push(w.ms)
    }
    // 200, 400, 400 ms each way (the address part caps the third)
    for (let i = 0; i < 3; i++) expect(Math.abs(unknown[i]! - wrong[i]!)).toBeLessThan(150)
  }, 20_000)
})

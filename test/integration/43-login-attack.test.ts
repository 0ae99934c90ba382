/**
 * Issue 13 section 4, second review: password guessers from many addresses must not lock real
 * users out (suspect checks never cost a clean login its place in the verification queue), and
 * a login abandoned before its answer costs no password check and counts as a failure.
 */
import { describe, expect, test } from 'bun:test'
import * as b from '../helpers/packet-builder.ts'
import { guessers, spyVerify, timedLogin } from '../helpers/guessers.ts'
import { passwdFile } from '../helpers/passwd-file.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'
import type { VerifyPool } from '../../src/auth/verify-pool.ts'

/** A broker checking `passwd` with a failure delay of 800 ms (`env`: more settings). */
const delayingBroker = (passwd: { path: string }, env: Record<string, string>) =>
  startBroker({ VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_FAIL_DELAY: '800', VMQTT_AUTH_FAIL_DELAY_ADDRESS_MAX: '800', ...env })

/** `n` logins of alice (right password, 127.0.0.1), each once the verification queue is full. */
async function loginsWhileQueueFull(port: number, pool: VerifyPool, n: number): Promise<{ code: number; ms: number }[]> {
  const real: { code: number; ms: number }[] = []
  for (let i = 0; i < n; i++) {
    await until('the verification queue full', () => pool.queued >= pool.maxQueued, 15_000)
    real.push(await timedLogin(port, { version: 5, username: 'alice', password: 'wonderland' }))
  }
  return real
}

/** alice's right password from `address` is answered without a failure delay (none recorded). */
async function expectNoFailureRecorded(port: number, address: string): Promise<void> {
  const r = await timedLogin(port, { version: 5, username: 'alice', password: 'wonderland' }, address)
  expect(r.code).toBe(0)
  expect(r.ms).toBeLessThan(700)
}

describe('guessers from many addresses', () => {
  test('guessers from 24 addresses filling the verification queue: a login from a clean address is still served, fast', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    await using broker = await startBroker({
      VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_MAX_CONCURRENT_VERIFICATIONS: '1', VMQTT_AUTH_MAX_QUEUED_VERIFICATIONS: '8', VMQTT_AUTH_FAIL_DELAY: '0',
    })
    const idle = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' })
    expect(idle.code).toBe(0)
    const pool = broker.broker.security!.pool
    const stop = new AbortController()
    // one guesser per address, 127.0.0.2-25, retrying at once: each address is a suspect after
    // its first failure or its first refusal as busy
    const guessing = Promise.all(Array.from({ length: 24 }, (_, i) => guessers(broker.port, 1, () => `u${i}`, stop.signal, `127.0.0.${i + 2}`)))
    try {
      await until('the verification queue full of suspect checks', () => pool.queued >= pool.maxQueued, 15_000)
      const real = await loginsWhileQueueFull(broker.port, pool, 3)
      // before: every one refused as busy (0x89); now served after at most the running check
      expect(real.map((r) => r.code)).toEqual([0, 0, 0])
      for (const r of real) expect(r.ms).toBeLessThan(idle.ms + 2000)
    } finally {
      stop.abort()
      await guessing
    }
  }, 60_000)
})

describe('guessers from ever new addresses', () => {
  test('one wrong login from each of many fresh addresses: a user who logged in before keeps getting in, fast', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland', mallory: 'x' }, 'real')
    await using broker = await startBroker({
      VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_MAX_CONCURRENT_VERIFICATIONS: '1', VMQTT_AUTH_MAX_QUEUED_VERIFICATIONS: '8', VMQTT_AUTH_FAIL_DELAY: '0',
    })
    const idle = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' })
    expect(idle.code).toBe(0)
    const pool = broker.broker.security!.pool
    // like rotating IPv6 /64s: every guess from an address never seen before (127.20-29.x.1)
    let stop = false
    const flood = (async () => {
      const pending: Promise<unknown>[] = []
      for (let n = 0; !stop; n++) {
        pending.push(timedLogin(broker.port, { version: 5, username: 'mallory', password: `guess-${n}` }, `127.${20 + Math.floor(n / 250)}.${(n % 250) + 1}.1`))
        await new Promise((r) => setTimeout(r, 25))
      }
      await Promise.all(pending)
    })()
    try {
      await until('the verification queue full of first logins', () => pool.queued >= pool.maxQueued, 15_000)
      const real = await loginsWhileQueueFull(broker.port, pool, 4)
      // before: each refused as busy (0x89), pushed out by newer first logins, then a suspect
      expect(real.map((r) => r.code)).toEqual([0, 0, 0, 0])
      for (const r of real) expect(r.ms).toBeLessThan(idle.ms + 2000)
    } finally {
      stop = true
      await flood
    }
  }, 60_000)
})

describe('logins the broker runs out of time for', () => {
  test('right passwords that wait past the connect timeout get busy (0x89), not a silent close, and no failure is recorded', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    await using broker = await delayingBroker(passwd, { VMQTT_AUTH_MAX_CONCURRENT_VERIFICATIONS: '1', VMQTT_MQTT_CONNECT_TIMEOUT: '2' })
    // a reconnect storm: 20 devices, each from its own address, far more than 2 s of checks
    const addr = (i: number) => `127.0.50.${i + 1}`
    const storm = await Promise.all(Array.from({ length: 20 }, (_, i) => timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' }, addr(i))))
    const codes = storm.map((r) => r.code)
    // before: the ones still waiting were closed at the connect timeout without a CONNACK (-1)
    expect(codes.filter((c) => c !== 0 && c !== 0x89)).toEqual([])
    expect(codes.filter((c) => c === 0x89).length).toBeGreaterThan(0)
    for (const r of storm) expect(r.ms).toBeLessThan(2000)
    // the same for MQTT 3.1.1: return code 3 (server unavailable)
    const v4 = await Promise.all(Array.from({ length: 20 }, (_, i) => timedLogin(broker.port, { version: 4, username: 'alice', password: 'wonderland' }, `127.0.51.${i + 1}`)))
    expect(v4.map((r) => r.code).filter((c) => c !== 0 && c !== 3)).toEqual([])
    // the devices refused as busy retry on a quiet broker: no failure delay (before: >= 800 ms)
    const busy = storm.flatMap((r, i) => (r.code === 0x89 ? [i] : [])).slice(0, 3)
    for (const i of busy) await expectNoFailureRecorded(broker.port, addr(i))
  }, 60_000)

  test('a check still running at the connect timeout: the broker closes the connection, no failure is recorded', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    await using broker = await delayingBroker(passwd, { VMQTT_MQTT_CONNECT_TIMEOUT: '1' })
    const spy = spyVerify(3000)
    try {
      const slow = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' }, '127.0.52.1')
      expect(slow.code).toBe(-1)
      await until('the check over', () => spy.stats.running === 0, 10_000)
    } finally {
      spy.restore()
    }
    // the client did not give up: before, this waited the failure delay (>= 800 ms)
    await expectNoFailureRecorded(broker.port, '127.0.52.1')
  }, 30_000)
})

describe('abandoned logins', () => {
  test('20 CONNECTs closed while their checks wait: no password verification for them, and no failure recorded for what was never checked', async () => {
    await using passwd = await passwdFile({ alice: 'wonderland' }, 'real')
    await using broker = await startBroker({
      VMQTT_AUTH_PASSWORD_FILE: passwd.path, VMQTT_AUTH_MAX_CONCURRENT_VERIFICATIONS: '1',
      VMQTT_AUTH_FAIL_DELAY: '800', VMQTT_AUTH_FAIL_DELAY_ADDRESS_MAX: '800',
    })
    const pool = broker.broker.security!.pool
    const spy = spyVerify()
    try {
      const clients = await Promise.all(Array.from({ length: 20 }, (_, i) => RawClient.connect(broker.port, { version: 4, localAddress: `127.0.0.${10 + i}` })))
      for (const [i, c] of clients.entries()) c.send(b.connect({ clientId: `ab-${i}`, username: 'alice', password: 'x' }))
      await until('one check running and 19 waiting', () => pool.running === 1 && pool.queued === 19, 10_000)
      for (const c of clients) c.destroy()
      await until('the pool idle', () => pool.running === 0 && pool.queued === 0, 15_000)
      // before: 20 verifications (~0.2 s of a core each) for clients that were gone
      expect(spy.stats.calls).toBeLessThanOrEqual(2)
    } finally {
      spy.restore()
    }
    // a login skipped because its client left taught nobody anything: not a failure (an attacker
    // who slows the pool must not turn a victim's own timeouts into failures), so the right
    // password from such an address is answered as fast as from a fresh one
    const fresh = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' }, '127.0.0.99')
    const skipped = await timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' }, '127.0.0.15')
    expect([fresh.code, skipped.code]).toEqual([0, 0])
    expect(fresh.ms).toBeLessThan(700)
    expect(skipped.ms).toBeLessThan(700)
  }, 40_000)
})

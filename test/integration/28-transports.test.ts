/**
 * The core scenarios over every transport (test/helpers/transports.ts): connect, QoS 0/1/2,
 * retain, the will on an abnormal close, session resume with a queued QoS 1 message, and a
 * session taken over from another transport. A new transport is one more TRANSPORTS entry.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { makeCerts, type TestCerts } from '../helpers/certs.ts'
import { startBroker, type TestBroker } from '../helpers/start-broker.ts'
import { TRANSPORTS, transportsEnv, type TestClient, type TestClientOptions, type Transport } from '../helpers/transports.ts'

let certs: TestCerts
beforeAll(async () => { certs = await makeCerts() })
afterAll(async () => { await certs.cleanup() })

/** A broker with every transport on; closes the clients opened through it on dispose. */
async function world() {
  const tb = await startBroker(transportsEnv(certs))
  const open: TestClient[] = []
  const on = async (t: Transport, o: TestClientOptions) => {
    const c = await t.connect(tb, certs, o)
    open.push(c)
    return c
  }
  return {
    tb, on,
    async [Symbol.asyncDispose]() {
      for (const c of open) c.destroy()
      await tb.close()
    },
  }
}

const other = (t: Transport) => TRANSPORTS.find((x) => x.name !== t.name && x.name === (t.name === 'tcp' ? 'ws' : 'tcp'))!

describe.each(TRANSPORTS.map((t) => [t.name, t] as const))('%s', (_name, t) => {
  describe.each([4, 5] as const)('v%d', (version) => {
    test('connects on its own listener', async () => {
      await using w = await world()
      await w.on(t, { clientId: `c-${t.name}`, version })
      const conn = w.tb.broker.connectionOf(`c-${t.name}`)!
      expect(conn.listener).toBe(t.listener)
      expect(conn.version).toBe(version)
    })

    test('QoS 0, 1 and 2 messages arrive with their QoS', async () => {
      await using w = await world()
      const sub = await w.on(t, { clientId: 'sub', version })
      const pub = await w.on(t, { clientId: 'pub', version })
      expect(await sub.subscribe('q/#', 2)).toEqual([2])
      for (const qos of [0, 1, 2] as const) {
        await pub.publish(`q/${qos}`, `at ${qos}`, { qos })
        expect(await sub.nextMessage()).toMatchObject({ topic: `q/${qos}`, payload: `at ${qos}`, qos })
      }
    })

    test('a retained message reaches a later subscriber with the retain flag', async () => {
      await using w = await world()
      const pub = await w.on(t, { clientId: 'pub', version })
      await pub.publish('r/state', 'on', { qos: 1, retain: true })
      const sub = await w.on(t, { clientId: 'sub', version })
      await sub.subscribe('r/+', 1)
      expect(await sub.nextMessage()).toMatchObject({ topic: 'r/state', payload: 'on', retain: true })
    })

    test('the will goes out when the connection drops without DISCONNECT', async () => {
      await using w = await world()
      const watcher = await w.on(t, { clientId: 'watcher', version })
      await watcher.subscribe('wills/#', 1)
      const dying = await w.on(t, { clientId: 'dying', version, will: { topic: 'wills/dying', payload: 'gone', qos: 1 } })
      dying.destroy()
      expect(await watcher.nextMessage()).toMatchObject({ topic: 'wills/dying', payload: 'gone' })
    })

    test('a persistent session resumes with the QoS 1 message queued while it was away', async () => {
      await using w = await world()
      const persistent = { clientId: 'keeper', version, clean: false, ...(version === 5 ? { sessionExpiry: 60 } : {}) }
      const first = await w.on(t, persistent)
      await first.subscribe('queued/x', 1)
      await first.end()
      const pub = await w.on(t, { clientId: 'pub', version })
      await pub.publish('queued/x', 'while away', { qos: 1 })
      const back = await w.on(t, persistent)
      expect(back.sessionPresent).toBe(true)
      expect(await back.nextMessage()).toMatchObject({ topic: 'queued/x', payload: 'while away', qos: 1 })
    })

    test(`a client id first on ${other(t).name}, then on ${t.name}: the first connection is taken over`, async () => {
      await using w = await world()
      const first = await w.on(other(t), { clientId: 'roamer', version })
      const taken = version === 5 ? first.disconnectedBy() : null
      await w.on(t, { clientId: 'roamer', version })
      // [MQTT-3.1.4-3] the existing connection is closed; v5 tells it why: 0x8E Session taken over
      if (taken !== null) expect(await taken).toBe(0x8e)
      expect(w.tb.broker.connectionOf('roamer')!.listener).toBe(t.listener)
    })
  })
})

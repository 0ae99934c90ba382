/**
 * Session state: clean session / clean start, session present, MQTT 5 session expiry, the
 * DISCONNECT session expiry rule, and the offline queue of a persistent session (order, QoS 0
 * policy, size limit and overflow policy).
 */
import { describe, expect, test } from 'bun:test'
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket, QoS } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = (typeof VERSIONS)[number]

/** CONNECT options for a session that outlives the connection (v5: expiry 60 s). */
const persistent = (v: V, clientId: string): b.ConnectOpts =>
  v === 5 ? { version: v, clientId, clean: false, properties: { sessionExpiry: 60 } } : { version: v, clientId, clean: false }

async function open(port: number, o: b.ConnectOpts): Promise<{ c: RawClient; ack: IConnackPacket }> {
  const { client, connack } = await RawClient.open(port, o)
  const ack = connack as IConnackPacket
  expect(o.version === 5 ? ack.reasonCode : ack.returnCode).toBe(0)
  return { c: client, ack }
}

async function subscribe(c: RawClient, v: V, topic: string, qos: number): Promise<void> {
  c.send(b.subscribe(7, [{ topic, qos }], { version: v }))
  const ack = (await c.nextOf('suback')) as ISubackPacket
  expect(ack.messageId).toBe(7)
  expect(ack.granted).toEqual([qos])
}

/** Normal DISCONNECT, then waits for the server to close the connection. */
async function leave(c: RawClient, v: V): Promise<void> {
  c.send(b.disconnect({ version: v }))
  await c.closed()
}

/** Publishes and waits for the acknowledgement, so the message has been routed when it returns. */
async function publishAcked(c: RawClient, v: V, topic: string, payload: string, qos: 1 | 2, id: number): Promise<void> {
  c.send(b.publish({ topic, payload, qos, packetId: id, version: v }))
  const ack = await c.nextOf(qos === 1 ? 'puback' : 'pubrec')
  expect((ack as { messageId?: number }).messageId).toBe(id)
  if (qos === 2) {
    c.send(b.pubrel(id, { version: v }))
    await c.nextOf('pubcomp')
  }
}

/**
 * Reads n PUBLISH packets and acknowledges them (QoS 1: PUBACK; QoS 2: PUBREC, then PUBCOMP
 * for its PUBREL); returns them in arrival order once every QoS 2 flow is complete.
 */
async function receive(c: RawClient, v: V, n: number): Promise<IPublishPacket[]> {
  const out: IPublishPacket[] = []
  const open = new Set<number>()
  while (out.length < n || open.size > 0) {
    const p = await c.next()
    if (p.cmd === 'pubrel') {
      expect(open.delete(p.messageId!)).toBe(true)
      c.send(b.pubcomp(p.messageId!, { version: v }))
      continue
    }
    if (p.cmd !== 'publish') throw new Error(`expected PUBLISH, got ${p.cmd}`)
    out.push(p)
    if (p.qos === 1) c.send(b.puback(p.messageId!, { version: v }))
    if (p.qos === 2) { open.add(p.messageId!); c.send(b.pubrec(p.messageId!, { version: v })) }
  }
  return out
}

const payloads = (ps: IPublishPacket[]) => ps.map((p) => p.payload.toString())

describe.concurrent.each(VERSIONS)('session present and clean start, MQTT version %i', (v) => {
  const presentTag = v === 5 ? '[MQTT-3.2.2-3] [MQTT-3.1.2-5]' : '[MQTT-3.2.2-2] [MQTT-3.1.2-4]'
  test(`${presentTag} a persistent session keeps its subscriptions across a reconnect and CONNACK says session present 1`, async () => {
    await using br = await startBroker()
    const { c: first, ack: a1 } = await open(br.port, persistent(v, 'keeper'))
    expect(a1.sessionPresent).toBe(false)
    await subscribe(first, v, 'keep/#', 1)
    await leave(first, v)
    const { c: again, ack: a2 } = await open(br.port, persistent(v, 'keeper'))
    await using _again = again
    expect(a2.sessionPresent).toBe(true)
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    await publishAcked(pub, v, 'keep/x', 'still subscribed', 1, 1)
    const [p] = await receive(again, v, 1)
    expect(p!.topic).toBe('keep/x')
    expect(p!.payload.toString()).toBe('still subscribed')
  })

  const cleanTag = v === 5 ? '[MQTT-3.1.2-4] [MQTT-3.2.2-2]' : '[MQTT-3.1.2-6] [MQTT-3.2.2-1]'
  test(`${cleanTag} a clean session discards the stored session: session present 0, no subscriptions, and it is not kept afterwards`, async () => {
    await using br = await startBroker()
    const { c: first } = await open(br.port, persistent(v, 'forgetful'))
    await subscribe(first, v, 'gone/#', 1)
    await leave(first, v)
    const { c: clean, ack } = await open(br.port, { version: v, clientId: 'forgetful', clean: true })
    expect(ack.sessionPresent).toBe(false)
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    await publishAcked(pub, v, 'gone/x', 'nobody', 1, 1)
    await clean.expectNothing(200)
    await leave(clean, v)
    // the clean session lasted as long as its connection
    const { c: later, ack: ack2 } = await open(br.port, persistent(v, 'forgetful'))
    await using _later = later
    expect(ack2.sessionPresent).toBe(false)
  })
})

describe.concurrent('MQTT 5 session expiry', () => {
  test('[MQTT-3.1.2-23] a Session Expiry Interval of 0 (absent) ends the session when the connection closes', async () => {
    await using br = await startBroker()
    const { c: first } = await open(br.port, { version: 5, clientId: 'ephemeral', clean: false })
    await subscribe(first, 5, 'eph/#', 1)
    await leave(first, 5)
    const { c: again, ack } = await open(br.port, { version: 5, clientId: 'ephemeral', clean: false })
    await using _again = again
    expect(ack.sessionPresent).toBe(false)
    await using pub = (await open(br.port, { version: 5, clientId: 'pub' })).c
    await publishAcked(pub, 5, 'eph/x', 'lost', 1, 1)
    await again.expectNothing(200)
  })

  test('[3.14.2.2.2] a DISCONNECT that sets a non-zero Session Expiry Interval after 0 in CONNECT gets DISCONNECT 0x82', async () => {
    await using br = await startBroker()
    const { c } = await open(br.port, { version: 5, clientId: 'sneaky', clean: false })
    await subscribe(c, 5, 'sneaky/#', 1)
    c.send(b.disconnect({ version: 5, reason: 0, properties: { sessionExpiry: 300 } }))
    const d = (await c.nextOf('disconnect')) as IDisconnectPacket
    expect(d.reasonCode).toBe(0x82)
    await c.closed()
    // the session still ended with the connection
    const { c: again, ack } = await open(br.port, { version: 5, clientId: 'sneaky', clean: false })
    await using _again = again
    expect(ack.sessionPresent).toBe(false)
  })

  test('[3.14.2.2.2] a DISCONNECT may change a non-zero Session Expiry Interval to 0, which ends the session', async () => {
    await using br = await startBroker()
    const { c } = await open(br.port, persistent(5, 'changes-mind'))
    c.send(b.disconnect({ version: 5, reason: 0, properties: { sessionExpiry: 0 } }))
    await c.closed()
    const { c: again, ack } = await open(br.port, persistent(5, 'changes-mind'))
    await using _again = again
    expect(ack.sessionPresent).toBe(false)
  })

  test.concurrent('[MQTT-3.1.2-23] [MQTT-4.1.0-2] a session with expiry 1 s is kept after the close, then discarded once the interval passes', async () => {
    await using br = await startBroker()
    const opts: b.ConnectOpts = { version: 5, clientId: 'short-lived', clean: false, properties: { sessionExpiry: 1 } }
    const { c: first } = await open(br.port, opts)
    await subscribe(first, 5, 'short/#', 1)
    await leave(first, 5)
    const { c: back, ack: kept } = await open(br.port, opts)
    expect(kept.sessionPresent).toBe(true)
    // a witness session with the same expiry ends after this one; its will (delayed beyond the
    // expiry) is published when it ends, which tells us both intervals have passed
    await using watcher = (await open(br.port, { version: 5, clientId: 'watcher' })).c
    await subscribe(watcher, 5, 'expired/+', 0)
    await leave(back, 5)
    const t0 = Date.now()
    const { c: witness } = await open(br.port, {
      ...opts, clientId: 'witness', will: { topic: 'expired/witness', payload: 'x', properties: { willDelay: 3600 } },
    })
    witness.destroy()
    const w = (await watcher.nextOf('publish', 3500)) as IPublishPacket
    expect(w.topic).toBe('expired/witness')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950)
    const { c: last, ack: gone } = await open(br.port, opts)
    await using _last = last
    expect(gone.sessionPresent).toBe(false)
  }, 8000)
})

describe.concurrent.each(VERSIONS)('offline queue of a persistent session, MQTT version %i', (v) => {
  const queueTag = v === 5 ? '[MQTT-4.5.0-1] [MQTT-4.6.0-6]' : '[MQTT-3.1.2-5] [MQTT-4.6.0-6]'

  /** Subscribes a persistent client at QoS 2 and disconnects it. */
  async function away(port: number, id: string, topic: string): Promise<void> {
    const { c } = await open(port, persistent(v, id))
    await subscribe(c, v, topic, 2)
    await leave(c, v)
  }

  async function comeBack(port: number, id: string): Promise<RawClient> {
    const { c, ack } = await open(port, persistent(v, id))
    expect(ack.sessionPresent).toBe(true)
    return c
  }

  test(`${queueTag} QoS 1 and QoS 2 messages published while the client is away are delivered on reconnect, in order`, async () => {
    await using br = await startBroker()
    await away(br.port, 'traveller', 'mail/#')
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    const sent: [string, 1 | 2][] = [['m1', 1], ['m2', 2], ['m3', 1], ['m4', 2], ['m5', 1]]
    for (const [i, [payload, qos]] of sent.entries()) await publishAcked(pub, v, 'mail/box', payload, qos, i + 1)
    await using c = await comeBack(br.port, 'traveller')
    const got = await receive(c, v, sent.length)
    expect(payloads(got)).toEqual(sent.map(([p]) => p))
    expect(got.map((p) => p.qos)).toEqual(sent.map(([, q]) => q as QoS))
    for (const p of got) expect(p.topic).toBe('mail/box')
    await c.expectNothing(150)
  })

  test(`${queueTag} QoS 0 messages are not queued for an offline session by default`, async () => {
    await using br = await startBroker()
    await away(br.port, 'no-q0', 'q0/#')
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    pub.send(b.publish({ topic: 'q0/a', payload: 'qos0', qos: 0, version: v }))
    // the QoS 1 publication after it is acknowledged only once the QoS 0 one has been routed
    await publishAcked(pub, v, 'q0/a', 'qos1', 1, 1)
    await using c = await comeBack(br.port, 'no-q0')
    expect(payloads(await receive(c, v, 1))).toEqual(['qos1'])
    await c.expectNothing(150)
  })

  test(`${queueTag} QoS 0 messages are queued with VMQTT_SESSION_QUEUE_QOS0=true`, async () => {
    await using br = await startBroker({ VMQTT_SESSION_QUEUE_QOS0: 'true' })
    await away(br.port, 'with-q0', 'q0/#')
    await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
    pub.send(b.publish({ topic: 'q0/a', payload: 'qos0', qos: 0, version: v }))
    await publishAcked(pub, v, 'q0/a', 'qos1', 1, 1)
    await using c = await comeBack(br.port, 'with-q0')
    const got = await receive(c, v, 2)
    expect(payloads(got)).toEqual(['qos0', 'qos1'])
    expect(got.map((p) => p.qos)).toEqual([0, 1])
    await c.expectNothing(150)
  })

  for (const [policy, env, expected] of [
    ['drop-oldest', { VMQTT_SESSION_QUEUE_OVERFLOW: 'drop-oldest' }, ['m3', 'm4', 'm5']],
    ['drop-new', { VMQTT_SESSION_QUEUE_OVERFLOW: 'drop-new' }, ['m1', 'm2', 'm3']],
  ] as const) {
    test(`VMQTT_LIMITS_MAX_QUEUED_MESSAGES=3 bounds the offline queue; overflow policy ${policy}`, async () => {
      await using br = await startBroker({ VMQTT_LIMITS_MAX_QUEUED_MESSAGES: '3', ...env })
      await away(br.port, 'bounded', 'box/#')
      await using pub = (await open(br.port, { version: v, clientId: 'pub' })).c
      for (let i = 1; i <= 5; i++) await publishAcked(pub, v, 'box/x', `m${i}`, 1, i)
      await using c = await comeBack(br.port, 'bounded')
      expect(payloads(await receive(c, v, 3))).toEqual([...expected])
      await c.expectNothing(200)
    })
  }
})

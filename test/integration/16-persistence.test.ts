/**
 * Persistence with the SQLite store: in-process brokers on a temporary data dir, where a
 * "restart" is broker.close() followed by a new broker on the same dir. Retained messages,
 * persistent sessions, offline queues, inflight QoS 1/2 state in both directions and pending
 * delayed wills survive; session and message expiry count wall-clock time across the restart;
 * group commit batches acknowledgements; a full store refuses new messages without losing
 * acknowledged ones and recovers once space is freed.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IConnackPacket, IPublishPacket, Packet } from 'mqtt-packet'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker, type TestBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const
type V = (typeof VERSIONS)[number]
const QUOTA_EXCEEDED = 0x97

/** A broker on a SQLite data dir that can be restarted on the same dir. */
class Persisted implements AsyncDisposable {
  readonly dir = mkdtempSync(join(tmpdir(), 'vmqtt-persist-'))
  readonly env: Record<string, string>
  #br: TestBroker | null = null

  private constructor(env: Record<string, string>) {
    this.env = { VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: this.dir, ...env }
  }

  static async start(env: Record<string, string> = {}): Promise<Persisted> {
    const p = new Persisted(env)
    try {
      p.#br = await startBroker(p.env)
    } catch (e) {
      rmSync(p.dir, { recursive: true, force: true })
      throw e
    }
    return p
  }

  get br(): TestBroker {
    if (this.#br === null) throw new Error('broker not running')
    return this.#br
  }

  get port(): number {
    return this.br.port
  }

  /** Graceful stop (clients are disconnected), without starting again. */
  async stop(): Promise<void> {
    const br = this.#br
    this.#br = null
    await br?.close()
  }

  /** A new broker on the same data dir. */
  async startAgain(): Promise<void> {
    if (this.#br !== null) throw new Error('still running')
    this.#br = await startBroker(this.env)
  }

  async restart(): Promise<void> {
    await this.stop()
    await this.startAgain()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.stop()
    } finally {
      rmSync(this.dir, { recursive: true, force: true })
    }
  }
}

/** A session that outlives its connection (v5: Session Expiry Interval 60 s unless given). */
const persistent = (v: V, clientId: string, expiry = 60): b.ConnectOpts =>
  v === 5 ? { version: v, clientId, clean: false, properties: { sessionExpiry: expiry } } : { version: v, clientId, clean: false }

async function open(port: number, o: b.ConnectOpts): Promise<{ c: RawClient; ack: IConnackPacket }> {
  const { client, connack } = await RawClient.open(port, o)
  const ack = connack as IConnackPacket
  const code = o.version === 5 ? ack.reasonCode : ack.returnCode
  if (code !== 0) { client.destroy(); throw new Error(`CONNECT of ${o.clientId} refused with 0x${code?.toString(16)}`) }
  return { c: client, ack }
}

async function subscribe(c: RawClient, v: V, filter: string, qos: number): Promise<void> {
  c.send(b.subscribe(11, [{ topic: filter, qos }], { version: v }))
  const ack = (await c.nextOf('suback')) as Packet & { granted: number[]; messageId: number }
  expect(ack.messageId).toBe(11)
  expect(ack.granted).toEqual([qos])
}

/** Normal DISCONNECT, then waits for the server to close the connection. */
async function leave(c: RawClient, v: V): Promise<void> {
  c.send(b.disconnect({ version: v }))
  await c.closed()
}

/** Publishes QoS 1/2 and completes the flow; returns the PUBACK / PUBREC reason code. */
async function publishAcked(c: RawClient, v: V, o: Omit<b.PublishOpts, 'version'> & { qos: 1 | 2; packetId: number }): Promise<number> {
  c.send(b.publish({ ...o, version: v }))
  const ack = (await c.nextOf(o.qos === 1 ? 'puback' : 'pubrec')) as Packet & { messageId: number; reasonCode?: number }
  expect(ack.messageId).toBe(o.packetId)
  if (o.qos === 2 && (ack.reasonCode ?? 0) < 0x80) {
    c.send(b.pubrel(o.packetId, { version: v }))
    const comp = (await c.nextOf('pubcomp')) as Packet & { messageId: number; reasonCode?: number }
    expect(comp.messageId).toBe(o.packetId)
    expect(comp.reasonCode ?? 0).toBe(0)
  }
  return ack.reasonCode ?? 0
}

/** Reads n PUBLISH packets, acknowledging each (QoS 2 flows completed); returns them in order. */
async function receive(c: RawClient, v: V, n: number): Promise<IPublishPacket[]> {
  const out: IPublishPacket[] = []
  const open2 = new Set<number>()
  while (out.length < n || open2.size > 0) {
    const p = await c.next()
    if (p.cmd === 'pubrel') {
      expect(open2.delete(p.messageId!)).toBe(true)
      c.send(b.pubcomp(p.messageId!, { version: v }))
      continue
    }
    if (p.cmd !== 'publish') throw new Error(`expected PUBLISH, got ${p.cmd}`)
    out.push(p)
    if (p.qos === 1) c.send(b.puback(p.messageId!, { version: v }))
    if (p.qos === 2) { open2.add(p.messageId!); c.send(b.pubrec(p.messageId!, { version: v })) }
  }
  return out
}

const payloads = (ps: IPublishPacket[]) => ps.map((p) => p.payload.toString())

/** Waits (polling the broker's state) until cond holds. */
async function waitFor(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms}ms waiting for ${what}`)
    await Bun.sleep(5)
  }
}

/** Lets wall-clock time pass until `at` (ms since epoch): the passing time is what expiry tests measure. */
async function untilWallClock(at: number): Promise<void> {
  const ms = at - Date.now()
  if (ms > 0) await Bun.sleep(ms)
}

describe.concurrent.each(VERSIONS)('restart with the SQLite store, MQTT version %i', (v) => {
  test('[MQTT-3.3.1-5] retained messages survive a restart, with their QoS, v5 properties (user properties in order) and remaining expiry', async () => {
    await using node = await Persisted.start()
    const userProperties: [string, string][] = [['k', 'one'], ['a', 'two'], ['k', 'three']]
    const props: b.Props = v === 5
      ? { payloadFormat: 1, messageExpiry: 60, contentType: 'text/plain', responseTopic: 'reply/to', correlationData: 'corr-1', userProperties }
      : {}
    {
      await using pub = (await open(node.port, { version: v, clientId: 'pub' })).c
      await publishAcked(pub, v, { topic: 'ret/q1', payload: 'retained one', qos: 1, packetId: 1, retain: true, properties: props })
      await publishAcked(pub, v, { topic: 'ret/q2', payload: 'retained two', qos: 2, packetId: 2, retain: true })
      await publishAcked(pub, v, { topic: 'ret/gone', payload: 'to be deleted', qos: 1, packetId: 3, retain: true })
      await publishAcked(pub, v, { topic: 'ret/gone', payload: '', qos: 1, packetId: 4, retain: true })
    }
    await node.restart()
    await using sub = (await open(node.port, { version: v, clientId: 'sub' })).c
    sub.send(b.subscribe(1, [{ topic: 'ret/#', qos: 2 }], { version: v }))
    await sub.nextOf('suback')
    const got = new Map<string, { p: IPublishPacket; raw: Buffer }>()
    for (let i = 0; i < 2; i++) {
      const raw = await sub.nextRaw()
      const p = sub.decode(raw) as IPublishPacket
      expect(p.cmd).toBe('publish')
      got.set(p.topic, { p, raw })
      if (p.qos === 1) sub.send(b.puback(p.messageId!, { version: v }))
      if (p.qos === 2) sub.send(b.pubrec(p.messageId!, { version: v }))
    }
    expect([...got.keys()].sort()).toEqual(['ret/q1', 'ret/q2'])
    const one = got.get('ret/q1')!
    expect([one.p.payload.toString(), one.p.qos, one.p.retain]).toEqual(['retained one', 1, true])
    const two = got.get('ret/q2')!
    expect([two.p.payload.toString(), two.p.qos, two.p.retain]).toEqual(['retained two', 2, true])
    if (v === 5) {
      const pp = one.p.properties!
      expect(pp.payloadFormatIndicator).toBe(true)
      expect(pp.contentType).toBe('text/plain')
      expect(pp.responseTopic).toBe('reply/to')
      expect(pp.correlationData?.toString()).toBe('corr-1')
      // remaining expiry: counted down, never reset to the original 60 s plus downtime
      expect(pp.messageExpiryInterval).toBeGreaterThan(50)
      expect(pp.messageExpiryInterval).toBeLessThanOrEqual(60)
      // [MQTT-3.3.2-18] user properties unchanged and in order: the exact property bytes
      expect(one.raw.includes(Buffer.from(b.propertyBytes({ userProperties })))).toBe(true)
      expect(two.p.properties?.messageExpiryInterval).toBeUndefined()
    }
    await sub.nextOf('pubrel')
    await sub.expectNothing(100)
  })

  test('[MQTT-3.2.2-2] [MQTT-3.1.2-5] persistent session subscriptions survive (session present 1) and QoS 1/2 messages queued while offline arrive in order', async () => {
    await using node = await Persisted.start()
    {
      const { c: s1, ack } = await open(node.port, persistent(v, 'keeper'))
      expect(ack.sessionPresent).toBe(false)
      await subscribe(s1, v, 'queue/#', 2)
      await leave(s1, v)
      await using pub = (await open(node.port, { version: v, clientId: 'pub' })).c
      for (let i = 1; i <= 6; i++) {
        const reason = await publishAcked(pub, v, { topic: `queue/${i % 2}`, payload: `m${i}`, qos: i % 2 === 0 ? 2 : 1, packetId: i })
        expect(reason).toBe(0)
      }
    }
    await node.restart()
    const { c: s2, ack } = await open(node.port, persistent(v, 'keeper'))
    await using _s2 = s2
    expect(ack.sessionPresent).toBe(true)
    const got = await receive(s2, v, 6)
    expect(payloads(got)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6'])
    expect(got.map((p) => p.qos)).toEqual([1, 2, 1, 2, 1, 2])
    expect(got.every((p) => !p.dup)).toBe(true)
    // the subscription itself was restored: a message published after the restart arrives live
    await using pub = (await open(node.port, { version: v, clientId: 'pub2' })).c
    await publishAcked(pub, v, { topic: 'queue/live', payload: 'after restart', qos: 1, packetId: 1 })
    expect(payloads(await receive(s2, v, 1))).toEqual(['after restart'])
    await s2.expectNothing(100)
  })

  test('[MQTT-4.4.0-1] an outbound QoS 1 message without PUBACK is resent after the restart with DUP=1 and the same packet id', async () => {
    await using node = await Persisted.start()
    {
      await using sub = (await open(node.port, persistent(v, 'slow'))).c
      await subscribe(sub, v, 'dup/#', 1)
      await using pub = (await open(node.port, { version: v, clientId: 'pub' })).c
      await publishAcked(pub, v, { topic: 'dup/a', payload: 'unacked', qos: 1, packetId: 77 })
      const first = (await sub.nextOf('publish')) as IPublishPacket
      expect([first.payload.toString(), first.dup, first.qos]).toEqual(['unacked', false, 1])
      await node.restart() // no PUBACK from the subscriber
      await sub.closed()
      const { c: again, ack } = await open(node.port, persistent(v, 'slow'))
      await using _again = again
      expect(ack.sessionPresent).toBe(true)
      const resent = await again.nextRaw()
      expect(resent).toEqual(b.publish({ topic: 'dup/a', payload: 'unacked', qos: 1, dup: true, packetId: first.messageId!, version: v }))
      again.send(b.puback(first.messageId!, { version: v }))
      await again.expectNothing(100)
      await waitFor(() => node.br.broker.sessions.get('slow')?.inflight.size === 0, 'the broker to take the PUBACK')
    }
    // acknowledged now: a second restart does not send it again
    await node.restart()
    const { c: third, ack } = await open(node.port, persistent(v, 'slow'))
    await using _third = third
    expect(ack.sessionPresent).toBe(true)
    await third.expectNothing(150)
  })

  test('[MQTT-4.4.0-1] outbound QoS 2 after PUBREC (PUBREL sent, no PUBCOMP): the broker resends PUBREL after the restart, not the PUBLISH', async () => {
    await using node = await Persisted.start()
    let id = 0
    {
      await using sub = (await open(node.port, persistent(v, 'half'))).c
      await subscribe(sub, v, 'rel/#', 2)
      await using pub = (await open(node.port, { version: v, clientId: 'pub' })).c
      await publishAcked(pub, v, { topic: 'rel/a', payload: 'exactly once', qos: 2, packetId: 5 })
      const p = (await sub.nextOf('publish')) as IPublishPacket
      id = p.messageId!
      sub.send(b.pubrec(id, { version: v }))
      expect(await sub.nextRaw()).toEqual(b.pubrel(id))
      await node.restart() // no PUBCOMP
      await sub.closed()
    }
    const { c: again, ack } = await open(node.port, persistent(v, 'half'))
    await using _again = again
    expect(ack.sessionPresent).toBe(true)
    expect(await again.nextRaw()).toEqual(b.pubrel(id))
    again.send(b.pubcomp(id, { version: v }))
    await again.expectNothing(100)
    await waitFor(() => node.br.broker.sessions.get('half')?.inflight.size === 0, 'the broker to take the PUBCOMP')
    await node.restart()
    const { c: third } = await open(node.port, persistent(v, 'half'))
    await using _third = third
    await third.expectNothing(150)
  })

  test('[MQTT-4.3.3-10] inbound QoS 2 awaiting PUBREL survives: the resent PUBLISH (DUP) is not delivered again, then PUBREL gets PUBCOMP', async () => {
    await using node = await Persisted.start()
    {
      await using sub = (await open(node.port, persistent(v, 'sub'))).c
      await subscribe(sub, v, 'once/#', 1)
      await using pub = (await open(node.port, persistent(v, 'pub'))).c
      pub.send(b.publish({ topic: 'once/a', payload: 'only once', qos: 2, packetId: 9, version: v }))
      const rec = (await pub.nextOf('pubrec')) as Packet & { messageId: number; reasonCode?: number }
      expect([rec.messageId, rec.reasonCode ?? 0]).toEqual([9, 0])
      expect(payloads(await receive(sub, v, 1))).toEqual(['only once'])
      await waitFor(() => node.br.broker.sessions.get('sub')?.inflight.size === 0, 'the broker to take the PUBACK of sub')
      await node.restart() // the publisher never sent PUBREL
    }
    await using sub = (await open(node.port, persistent(v, 'sub'))).c
    const { c: pub, ack } = await open(node.port, persistent(v, 'pub'))
    await using _pub = pub
    expect(ack.sessionPresent).toBe(true)
    pub.send(b.publish({ topic: 'once/a', payload: 'only once', qos: 2, dup: true, packetId: 9, version: v }))
    const rec = (await pub.nextOf('pubrec')) as Packet & { messageId: number; reasonCode?: number }
    expect([rec.messageId, rec.reasonCode ?? 0]).toEqual([9, 0])
    await sub.expectNothing(200)
    pub.send(b.pubrel(9, { version: v }))
    const comp = await pub.nextRaw()
    // the id was known: PUBCOMP success (v5 without 0x92 Packet Identifier not found)
    expect(comp).toEqual(b.pubcomp(9))
    await sub.expectNothing(100)
    // the id is free again: a new message with it is delivered
    await publishAcked(pub, v, { topic: 'once/b', payload: 'new one', qos: 2, packetId: 9 })
    expect(payloads(await receive(sub, v, 1))).toEqual(['new one'])
  })

  test('message expiry counts wall-clock time across the restart (queued and retained messages)', async () => {
    await using node = await Persisted.start()
    let publishedAt = 0
    {
      const { c: s1 } = await open(node.port, persistent(v, 'late'))
      await subscribe(s1, v, 'exp/q/#', 1)
      await leave(s1, v)
      await using pub = (await open(node.port, { version: 5, clientId: 'pub5' })).c
      await publishAcked(pub, 5, { topic: 'exp/q/short', payload: 'expires', qos: 1, packetId: 1, properties: { messageExpiry: 1 } })
      await publishAcked(pub, 5, { topic: 'exp/q/long', payload: 'stays', qos: 1, packetId: 2, properties: { messageExpiry: 30 } })
      await publishAcked(pub, 5, { topic: 'exp/r/short', payload: 'expires', qos: 1, packetId: 3, retain: true, properties: { messageExpiry: 1 } })
      await publishAcked(pub, 5, { topic: 'exp/r/long', payload: 'stays', qos: 1, packetId: 4, retain: true, properties: { messageExpiry: 30 } })
      publishedAt = Date.now() // every message above was published before this
    }
    await node.stop()
    await untilWallClock(publishedAt + 1100)
    await node.startAgain()
    const { c: s2, ack } = await open(node.port, persistent(v, 'late'))
    await using _s2 = s2
    expect(ack.sessionPresent).toBe(true)
    const [queued] = await receive(s2, v, 1)
    expect([queued!.topic, queued!.payload.toString()]).toEqual(['exp/q/long', 'stays'])
    // [MQTT-3.3.2-6] the interval sent is what is left after the downtime, not 30 again
    if (v === 5) expect(queued!.properties?.messageExpiryInterval).toBeLessThanOrEqual(29)
    await s2.expectNothing(100)
    s2.send(b.subscribe(2, [{ topic: 'exp/r/#', qos: 1 }], { version: v }))
    await s2.nextOf('suback')
    const [ret] = await receive(s2, v, 1)
    expect([ret!.topic, ret!.payload.toString(), ret!.retain]).toEqual(['exp/r/long', 'stays', true])
    if (v === 5) expect(ret!.properties?.messageExpiryInterval).toBeLessThanOrEqual(29)
    await s2.expectNothing(100)
  })

  test('durability "process" (synchronous=NORMAL) keeps retained messages and queued messages across a restart too', async () => {
    await using node = await Persisted.start({ VMQTT_DATA_DURABILITY: 'process' })
    {
      const { c: s1 } = await open(node.port, persistent(v, 'proc'))
      await subscribe(s1, v, 'proc/#', 2)
      await leave(s1, v)
      await using pub = (await open(node.port, { version: v, clientId: 'pub' })).c
      await publishAcked(pub, v, { topic: 'proc/r', payload: 'retained', qos: 1, packetId: 1, retain: true })
      await publishAcked(pub, v, { topic: 'proc/q', payload: 'queued', qos: 2, packetId: 2 })
    }
    await node.restart()
    const { c: s2, ack } = await open(node.port, persistent(v, 'proc'))
    await using _s2 = s2
    expect(ack.sessionPresent).toBe(true)
    expect(payloads(await receive(s2, v, 2))).toEqual(['retained', 'queued'])
    await using fresh = (await open(node.port, { version: v, clientId: 'fresh' })).c
    fresh.send(b.subscribe(1, [{ topic: 'proc/#', qos: 1 }], { version: v }))
    await fresh.nextOf('suback')
    const [r] = await receive(fresh, v, 1)
    expect([r!.topic, r!.payload.toString(), r!.retain]).toEqual(['proc/r', 'retained', true])
  })
})

describe.concurrent('restart with the SQLite store, MQTT 5 only', () => {
  test('[MQTT-3.1.2-23] a session with expiry 1 s expires across a restart: wall-clock time counts while the broker is down', async () => {
    await using node = await Persisted.start()
    const { c: short } = await open(node.port, persistent(5, 'short', 1))
    await subscribe(short, 5, 'x/#', 1)
    const { c: long } = await open(node.port, persistent(5, 'long', 60))
    await subscribe(long, 5, 'x/#', 1)
    await leave(long, 5)
    await leave(short, 5)
    const leftAt = Date.now()
    await node.stop()
    await untilWallClock(leftAt + 1200)
    await node.startAgain()
    // connect at once: before any periodic sweep could run
    const { c: s, ack } = await open(node.port, persistent(5, 'short', 1))
    await using _s = s
    expect(ack.sessionPresent).toBe(false)
    const { c: l, ack: lack } = await open(node.port, persistent(5, 'long', 60))
    await using _l = l
    expect(lack.sessionPresent).toBe(true)
    // the expired session's subscription is gone too: only 'long' gets the message
    await using pub = (await open(node.port, { version: 5, clientId: 'pub' })).c
    await publishAcked(pub, 5, { topic: 'x/1', payload: 'hello', qos: 1, packetId: 1 })
    expect(payloads(await receive(l, 5, 1))).toEqual(['hello'])
    await s.expectNothing(100)
  })

  test('[MQTT-3.1.3-9] a delayed will pending when the broker stopped is published after the restart, once its delay has passed', async () => {
    await using node = await Persisted.start()
    const { c: watcher } = await open(node.port, persistent(5, 'watcher'))
    await subscribe(watcher, 5, 'wills/#', 1)
    await leave(watcher, 5)
    const { c: dying } = await open(node.port, {
      ...persistent(5, 'dying', 60),
      will: { topic: 'wills/dying', payload: 'gone', qos: 1, properties: { willDelay: 1, contentType: 'text/plain' } },
    })
    dying.destroy() // abnormal: the will is due in 1 s
    const droppedAt = Date.now()
    await waitFor(() => !node.br.broker.isOnline('dying'), 'the broker to notice the dropped connection')
    await node.restart()
    expect(Date.now()).toBeLessThan(droppedAt + 1000) // restarted before the will was due
    const { c: again, ack } = await open(node.port, persistent(5, 'watcher'))
    await using _again = again
    expect(ack.sessionPresent).toBe(true)
    const p = (await again.nextOf('publish', 4000)) as IPublishPacket
    const at = Date.now()
    expect([p.topic, p.payload.toString(), p.properties?.contentType]).toEqual(['wills/dying', 'gone', 'text/plain'])
    expect(at).toBeGreaterThanOrEqual(droppedAt + 1000)
    again.send(b.puback(p.messageId!, { version: 5 }))
    await again.expectNothing(100)
  })

  test('[MQTT-4.6.0-2] group commit: 200 QoS 1 PUBLISH in one write to a broker with a persistent subscriber get 200 PUBACKs in order, in far fewer than 200 commits', async () => {
    await using node = await Persisted.start()
    const broker = node.br.broker
    await using sub = (await open(node.port, persistent(5, 'durable'))).c
    await subscribe(sub, 5, 'gc/#', 1)
    await using pub = (await open(node.port, { version: 5, clientId: 'burst' })).c
    const burst = Buffer.concat(Array.from({ length: 200 }, (_, i) => b.publish({ topic: `gc/${i % 7}`, payload: `m${i}`, qos: 1, packetId: i + 1, version: 5 })))
    const before = broker.stats.commits
    pub.send(burst)
    const ids: number[] = []
    for (let i = 0; i < 200; i++) {
      const ack = (await pub.next()) as Packet & { messageId: number; reasonCode?: number }
      expect(ack.cmd).toBe('puback')
      expect(ack.reasonCode ?? 0).toBe(0)
      ids.push(ack.messageId)
    }
    const commits = broker.stats.commits - before
    expect(ids).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
    expect(commits).toBeGreaterThan(0)
    if (process.env.VMQTT_TEST_VERBOSE) console.log(`group commit: 200 PUBACKs after ${commits} commits`)
    expect(commits).toBeLessThanOrEqual(20)
    // every message reached the persistent subscriber, in order
    const got = await receive(sub, 5, 200)
    expect(payloads(got)).toEqual(Array.from({ length: 200 }, (_, i) => `m${i}`))
  })
})

describe('a full store (data.maxSize)', () => {
  test('v5 QoS 1 gets PUBACK 0x97, v3.1.1 is disconnected, QoS 0 still flows, nothing acknowledged is lost, and deleting retained messages frees room', async () => {
    await using node = await Persisted.start({ VMQTT_DATA_MAX_SIZE: '1' })
    const big = (topic: string) => Buffer.alloc(100 * 1024, topic)
    const acked: string[] = []
    const refused: string[] = []
    await using p5 = (await open(node.port, { version: 5, clientId: 'p5' })).c
    let id = 0
    for (let i = 0; i < 40 && refused.length === 0; i++) {
      const topic = `big/${i}`
      const reason = await publishAcked(p5, 5, { topic, payload: big(topic), qos: 1, packetId: ++id, retain: true })
      if (reason < 0x80) acked.push(topic)
      else { expect(reason).toBe(QUOTA_EXCEEDED); refused.push(topic) }
    }
    if (process.env.VMQTT_TEST_VERBOSE) console.log(`full store: ${acked.length} retained 100 KiB messages acknowledged before 0x97`)
    expect(acked.length).toBeGreaterThanOrEqual(3)
    expect(refused.length).toBe(1)
    // still full: refused again, and the v5 publisher stays connected
    expect(await publishAcked(p5, 5, { topic: 'big/again', payload: big('big/again'), qos: 1, packetId: ++id, retain: true })).toBe(QUOTA_EXCEEDED)
    refused.push('big/again')
    // v3.1.1 has no reason code in PUBACK: the publisher is disconnected without a PUBACK
    {
      await using p4 = (await open(node.port, { version: 4, clientId: 'p4' })).c
      p4.send(b.publish({ topic: 'big/v4', payload: big('big/v4'), qos: 1, packetId: 1, retain: true }))
      await p4.closed()
      await expect(p4.next(100)).rejects.toThrow('closed')
      refused.push('big/v4')
    }
    // everyone else is still served: QoS 0 flows
    {
      await using s0 = (await open(node.port, { version: 5, clientId: 's0' })).c
      await subscribe(s0, 5, 'live/#', 0)
      p5.send(b.publish({ topic: 'live/x', payload: 'still flowing', qos: 0, version: 5 }))
      const p = (await s0.nextOf('publish')) as IPublishPacket
      expect(p.payload.toString()).toBe('still flowing')
    }
    await node.restart()

    /** Subscribes to big/# and expects exactly these retained topics, each with its own payload. */
    const expectRetained = async (topics: string[]): Promise<void> => {
      await using s = (await open(node.port, { version: 5, clientId: 'check' })).c
      s.send(b.subscribe(1, [{ topic: 'big/#', qos: 0 }], { version: 5 }))
      await s.nextOf('suback')
      const got: string[] = []
      for (let i = 0; i < topics.length; i++) {
        const p = (await s.nextOf('publish')) as IPublishPacket
        expect(Buffer.from(p.payload).equals(big(p.topic))).toBe(true)
        got.push(p.topic)
      }
      await s.expectNothing(100)
      expect(got.sort()).toEqual([...topics].sort())
    }
    // every acknowledged message is there after the restart; the refused ones are not
    await expectRetained(acked)

    // recovery: delete three retained messages (empty payload), then new messages fit again
    await using q5 = (await open(node.port, { version: 5, clientId: 'q5' })).c
    const deleted = acked.slice(0, 3)
    for (const topic of deleted) {
      expect(await publishAcked(q5, 5, { topic, payload: '', qos: 1, packetId: ++id, retain: true })).toBeLessThan(0x80)
    }
    expect(await publishAcked(q5, 5, { topic: 'big/new5', payload: big('big/new5'), qos: 1, packetId: ++id, retain: true })).toBeLessThan(0x80)
    {
      await using q4 = (await open(node.port, { version: 4, clientId: 'q4' })).c
      expect(await publishAcked(q4, 4, { topic: 'big/new4', payload: big('big/new4'), qos: 1, packetId: 1, retain: true })).toBe(0)
    }
    await node.restart()
    await expectRetained([...acked.filter((t) => !deleted.includes(t)), 'big/new5', 'big/new4'])
  })
})

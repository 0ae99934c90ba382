/**
 * Small PUBLISH frames that arrive several to a read are copied into shared slabs (slab.ts).
 * A message the broker keeps beyond routing (retained, queued for an offline session,
 * unacknowledged when its subscriber goes away) must not keep a whole slab alive: these
 * tests send frames batched into one write, so they do land in slabs, and check the buffers
 * of what the broker kept.
 */
import { describe, expect, test } from 'bun:test'
import type { Message } from '../../src/codec/message.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

/** The message's payload (and frame) are buffers of their own, with the bytes sent. */
function expectOwnBuffers(msg: Message | undefined, payload: string): void {
  expect(msg).toBeDefined()
  expect(msg!.payload.toString()).toBe(payload)
  expect(msg!.payload.buffer.byteLength).toBeLessThan(64)
  if (msg!.frame !== undefined) expect(msg!.frame.buffer.byteLength).toBeLessThan(64)
}

/** Three PUBLISH frames in one write, then a PINGREQ: the PINGRESP says all were handled. */
async function publishBatch(c: RawClient, topic: (i: number) => string, qos: number, retain: boolean): Promise<void> {
  const frames = [1, 2, 3].map((i) => b.publish({ topic: topic(i), payload: `payload-${i}`, qos, packetId: i, retain }))
  c.send(Buffer.concat([...frames, b.pingreq()]))
  await c.nextOf('pingresp')
}

/** A client with a persistent session (clean session 0) and a QoS 1 subscription to `filter`. */
async function persistentSubscriber(port: number, clientId: string, filter: string): Promise<RawClient> {
  const { client } = await RawClient.open(port, { clientId, clean: false })
  client.send(b.subscribe(1, [{ topic: filter, qos: 1 }]))
  await client.nextOf('suback')
  return client
}

describe('messages kept beyond routing hold no slab', () => {
  test('retained messages', async () => {
    await using tb = await startBroker()
    const { client } = await RawClient.open(tb.port, { clientId: 'pub' })
    await publishBatch(client, (i) => `r/${i}`, 0, true)
    for (const i of [1, 2, 3]) expectOwnBuffers(tb.broker.store.getRetained(`r/${i}`), `payload-${i}`)
    client.destroy()
  })

  test('messages queued for an offline session', async () => {
    await using tb = await startBroker()
    const sub = await persistentSubscriber(tb.port, 'offline', 'q/#')
    sub.send(b.disconnect())
    await sub.closed()
    const { client } = await RawClient.open(tb.port, { clientId: 'pub' })
    await publishBatch(client, (i) => `q/${i}`, 1, false)
    const queue = tb.broker.sessions.get('offline')!.queue
    expect(queue.length).toBe(3)
    queue.forEach((d, i) => expectOwnBuffers(d.msg, `payload-${i + 1}`))
    client.destroy()
  })

  test('unacknowledged messages of a subscriber that goes away', async () => {
    await using tb = await startBroker()
    const sub = await persistentSubscriber(tb.port, 'gone', 'u/#')
    const { client } = await RawClient.open(tb.port, { clientId: 'pub' })
    await publishBatch(client, (i) => `u/${i}`, 1, false)
    for (let i = 0; i < 3; i++) await sub.nextOf('publish')
    const s = tb.broker.sessions.get('gone')!
    expect(s.inflight.size).toBe(3)
    // while the subscriber is online, its window holds the routed messages as they came
    expect([...s.inflight.values()].some((f) => f.delivery.msg.payload.buffer.byteLength >= 1024)).toBe(true)
    sub.destroy()
    await until('the session to go offline', () => s.connection === null)
    ;[...s.inflight.values()].forEach((f, i) => expectOwnBuffers(f.delivery.msg, `payload-${i + 1}`))
    client.destroy()
  })
})

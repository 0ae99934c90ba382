/**
 * The idle collection (src/broker/idle-gc.ts): after a burst, once the broker is really idle,
 * one non-blocking collection at most once a minute; never while a gateway's steady traffic
 * flows. Driven tick by tick with a fake RSS, clock and collector.
 */
import { describe, expect, test } from 'bun:test'
import type { Broker } from '../../src/broker/broker.ts'
import { IdleCollector } from '../../src/broker/idle-gc.ts'

const MiB = 1024 * 1024

function rig() {
  const stats = { bytesIn: 0, bytesOut: 0, msgsIn: 0, msgsOut: 0, connectionsTotal: 0 }
  const calls: boolean[] = []
  const state = { rss: 100 * MiB, now: 0 }
  const broker = { stats, log: { info: () => {} } } as unknown as Broker
  const gc = new IdleCollector(broker, { rss: () => state.rss, gc: (force) => { calls.push(force) }, now: () => state.now })
  /** n seconds with `msgs` messages of 100 bytes per second. */
  const run = (n: number, msgs: number) => {
    for (let i = 0; i < n; i++) {
      stats.msgsIn += msgs
      stats.bytesIn += msgs * 100
      state.now += 1000
      gc.tick()
    }
  }
  return { state, calls, run }
}

describe('idle collection', () => {
  test.each([
    ['a gateway at 500 messages/s (50 KB/s), however much RSS grew', 500, 500],
    ['an idle broker whose RSS grew under 32 MiB', 0, 24],
  ])('no collection: %s', (_, msgs, growth) => {
    const { state, calls, run } = rig()
    run(3, msgs)
    state.rss += growth * MiB
    run(600, msgs)
    expect(calls).toEqual([])
  })

  test('after a burst: one non-blocking collection once idle for 5 s, then at most one a minute', () => {
    const { state, calls, run } = rig()
    run(3, 0)
    state.rss += 200 * MiB
    run(3, 50_000)
    run(4, 0)
    expect(calls).toEqual([])
    run(1, 0)
    expect(calls).toEqual([false])
    // RSS stays up (the heap is live): it becomes the settled value, nothing more to do
    run(20, 0)
    expect(calls).toEqual([false])
    // another growth within the minute waits for the minute to pass
    state.rss += 100 * MiB
    run(38, 0)
    expect(calls).toEqual([false])
    run(2, 0)
    expect(calls).toEqual([false, false])
  })
})

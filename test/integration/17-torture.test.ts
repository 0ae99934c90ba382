/**
 * Kill -9 torture (issue 3): the broker runs as a child process on a SQLite data dir and is
 * killed with SIGKILL at random moments while QoS 1 and QoS 2 traffic flows between MQTT 3.1.1
 * and MQTT 5 clients with persistent sessions. Every acknowledged message must reach every
 * subscriber (QoS 2 exactly once), in order per publisher, and retained topics must hold the
 * last acknowledged value. The harness is test/helpers/torture.ts; scripts/torture.ts runs it
 * longer. Replay a failure with VMQTT_TORTURE_SEED=<seed printed below>. The overflow scenarios
 * (issue 13) keep subscribers away long enough to overflow a small queue bound.
 */
import { describe, expect, test } from 'bun:test'
import { analyse, runTorture, summary, type AnalysisInput } from '../helpers/torture.ts'

const seed = Number(process.env.VMQTT_TORTURE_SEED ?? Math.floor(Math.random() * 2 ** 31))

describe('kill -9 torture', () => {
  test('fsync: 20 SIGKILL cycles lose nothing acknowledged, QoS 2 exactly once, order and retained kept', async () => {
    console.log(`torture seed ${seed} (replay: VMQTT_TORTURE_SEED=${seed} or bun scripts/torture.ts --seed ${seed})`)
    const r = await runTorture({ cycles: 20, seed, durability: 'fsync' })
    console.log(summary(r))
    expect(r.ok, summary(r)).toBe(true)
    expect(r.losses).toBe(0)
    expect(r.duplicates.qos2).toBe(0)
    expect(r.orderViolations).toBe(0)
    expect(r.retainedMismatches).toBe(0)
    // the kills landed while traffic flowed: there was something to lose and something to resend
    expect(r.acknowledged.qos1).toBeGreaterThan(500)
    expect(r.acknowledged.qos2).toBeGreaterThan(500)
    expect(r.acknowledged.retained).toBeGreaterThan(0)
    expect(r.resent.publish).toBeGreaterThan(0)
    expect(r.delivered).toBe(r.expectedDeliveries)
  }, 90_000)

  test('process durability with a 2 ms commit interval: 10 SIGKILL cycles lose nothing acknowledged', async () => {
    const s = seed + 1
    console.log(`torture seed ${s} (process, commit interval 2 ms)`)
    const r = await runTorture({ cycles: 10, seed: s, durability: 'process', env: { VMQTT_DATA_COMMIT_INTERVAL: '2' } })
    console.log(summary(r))
    expect(r.ok, summary(r)).toBe(true)
    expect(r.acknowledged.qos2).toBeGreaterThan(500)
    expect(r.delivered).toBe(r.expectedDeliveries)
  }, 90_000)

  // issue 13: at a queue limit, refuse loses nothing acknowledged; drop-* lose exactly what they count
  test('queue overflow, refuse: subscribers away long enough to fill a 100-message queue, with SIGKILLs; refused messages are published again and nothing acknowledged is lost', async () => {
    const s = seed + 2
    console.log(`torture seed ${s} (overflow refuse, max queued 100)`)
    const r = await runTorture({ cycles: 4, seed: s, durability: 'fsync', overflow: { policy: 'refuse', maxQueued: 100 }, lateChance: 0.6, minUpMs: 200, maxUpMs: 400, offlineMs: 800 })
    console.log(summary(r))
    expect(r.ok, summary(r)).toBe(true)
    expect(r.losses).toBe(0)
    // the bound was hit: publishers were refused (v5 0x97) or disconnected (v3) and published again
    expect(r.refused + r.resent.publish, summary(r)).toBeGreaterThan(0)
    expect(r.queueLimitLines, summary(r)).toBeGreaterThan(0)
    expect(r.delivered).toBe(r.expectedDeliveries)
  }, 90_000)

  for (const policy of ['drop-oldest', 'drop-new'] as const) {
    test(`queue overflow, ${policy}: subscribers away long enough to overflow a 100-message queue lose exactly what $SYS counted`, async () => {
      const s = seed + (policy === 'drop-oldest' ? 3 : 4)
      console.log(`torture seed ${s} (overflow ${policy}, max queued 100, no kills)`)
      const r = await runTorture({ cycles: 3, seed: s, durability: 'process', overflow: { policy, maxQueued: 100 }, kill: false, lateChance: 0.6, minUpMs: 150, maxUpMs: 300, offlineMs: 600 })
      console.log(summary(r))
      expect(r.ok, summary(r)).toBe(true)
      expect(r.dropsCounted, summary(r)).toBeGreaterThan(0)
      expect(r.losses).toBe(r.dropsCounted!)
      expect(r.queueLimitLines).toBeGreaterThan(0)
      expect(r.delivered).toBe(r.expectedDeliveries - r.losses)
    }, 60_000)
  }

  test('the checks fail when nothing is durable: with the memory store sessions and acknowledged messages are lost', async () => {
    const r = await runTorture({ cycles: 2, seed, store: 'memory', minUpMs: 200, maxUpMs: 300, drainTimeoutMs: 1000 })
    expect(r.ok).toBe(false)
    expect(r.sessionsLost, summary(r)).toBeGreaterThan(0)
    expect(r.losses, summary(r)).toBeGreaterThan(0)
  }, 30_000)
})

describe('torture analysis', () => {
  const pubs: AnalysisInput['publishers'] = [
    { id: 'a', qos: 1, ackedData: [1, 2, 3, 4, 6], lastAckedRetained: 5, nextSeq: 7 },
    { id: 'b', qos: 2, ackedData: [1, 2, 3, 4, 6], lastAckedRetained: 5, nextSeq: 7 },
  ]
  const retained = new Map([['a', { seq: 5, retain: true }], ['b', { seq: 5, retain: true }]])
  const one = (arrivals: [string, number[]][], ret = retained) =>
    analyse({ publishers: pubs, subscribers: [{ id: 's', arrivals: new Map(arrivals) }], retained: ret })

  test('a clean run: QoS 1 repeats are duplicates, not order violations; gaps are allowed', () => {
    const a = one([['a', [1, 2, 3, 2, 3, 4, 6]], ['b', [1, 2, 3, 4, 6]]])
    expect(a).toMatchObject({ expectedDeliveries: 10, delivered: 10, losses: 0, orderViolations: 0, retainedMismatches: 0, unknown: 0 })
    expect(a.duplicates).toEqual({ qos1: 2, qos2: 0 })
    expect(a.problems).toEqual([])
  })

  test('QoS 2 duplicates, losses, first deliveries out of order and never-published messages are caught', () => {
    const a = one([['a', [1, 3, 2, 4, 6]], ['b', [1, 2, 2, 3, 6, 9]]])
    expect(a.duplicates).toEqual({ qos1: 0, qos2: 1 })
    expect(a.orderViolations).toBe(1)
    expect(a.losses).toBe(1)
    expect(a.unknown).toBe(1)
    expect(a.problems.join('\n')).toContain('loss: s never got acknowledged b:4')
  })

  test('a message refused (queue full) and published again later is not judged for order; a loss of it still counts', () => {
    const refusedPubs = pubs.map((p) => p.id === 'a' ? { ...p, republished: new Set([2]) } : p)
    const a = analyse({ publishers: refusedPubs, subscribers: [{ id: 's', arrivals: new Map([['a', [1, 3, 4, 2, 6]], ['b', [1, 3, 2, 4, 6]]]) }], retained })
    expect(a.orderViolations).toBe(1) // b:2 after b:3; a:2 was published again after a:3 and a:4
    expect(a.losses).toBe(0)
    const lost = analyse({ publishers: refusedPubs, subscribers: [{ id: 's', arrivals: new Map([['a', [1, 3, 4, 6]], ['b', [1, 2, 3, 4, 6]]]) }], retained })
    expect(lost.losses).toBe(1)
  })

  test('retained: an older value, a missing one or one without RETAIN is a mismatch', () => {
    const full: [string, number[]][] = [['a', [1, 2, 3, 4, 6]], ['b', [1, 2, 3, 4, 6]]]
    expect(one(full, new Map([['a', { seq: 4, retain: true }], ['b', { seq: 5, retain: true }]])).retainedMismatches).toBe(1)
    expect(one(full, new Map([['a', { seq: 5, retain: true }]])).retainedMismatches).toBe(1)
    expect(one(full, new Map([['a', { seq: 5, retain: false }], ['b', { seq: 5, retain: true }]])).retainedMismatches).toBe(1)
  })
})

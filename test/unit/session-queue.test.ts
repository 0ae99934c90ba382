/**
 * Session queue bookkeeping with a store (src/session/session.ts): the in-memory head, the part
 * that lives only in the store, paging it back in order, and a store that cannot be read for a
 * while (nothing is forgotten; the next read picks up where it stopped).
 */
import { describe, expect, test } from 'bun:test'
import type { Message } from '../../src/codec/message.ts'
import { Session } from '../../src/session/session.ts'
import type { Delivery } from '../../src/session/types.ts'
import { MemoryStore } from '../../src/store/memory.ts'
import { StoreError } from '../../src/store/types.ts'

const msg = (i: number): Message => ({ topic: 't/q', payload: Buffer.from(`m${i}`), qos: 1, retain: false, props: null, expiresAt: 0, origin: 'p' })

/** Queues n deliveries the way the broker does: written to the store, counted in memory or spilled. */
function fill(s: Session, from: number, to: number, spill: boolean): void {
  for (let i = from; i <= to; i++) {
    const d: Delivery = { msg: msg(i), qos: 1, retain: false, subIds: null, seq: s.nextSeq++ }
    s.store!.putOutbox(s.clientId, { seq: d.seq!, delivery: d, packetId: 0, state: 'queued' })
    const size = 3 + d.msg.payload.length
    if (spill) s.spillQueued(d.seq!, size)
    else s.pushQueued(d, size)
  }
}

const drain = (s: Session): string[] => {
  const out: string[] = []
  for (let d = s.shiftQueued(); d !== undefined; d = s.shiftQueued()) {
    out.push(d.msg.payload.toString())
    s.store!.removeOutbox(s.clientId, d.seq!)
  }
  return out
}

describe('Session queue with a store', () => {
  test('head, then the spilled part read back in pages, in seq order; counts and bytes follow', () => {
    const s = new Session('c', 5)
    s.store = new MemoryStore()
    fill(s, 1, 10, false)
    fill(s, 11, 700, true)
    expect([s.headCount, s.spilledCount, s.queuedCount]).toEqual([10, 690, 700])
    const bytes = s.queuedBytes
    expect(s.headBytes).toBe(10 * 3 + [...Array(10)].reduce((n, _, i) => n + `m${i + 1}`.length, 0))
    const got = drain(s)
    expect(got).toEqual(Array.from({ length: 700 }, (_, i) => `m${i + 1}`))
    expect([s.queuedCount, s.queuedBytes, s.headBytes]).toEqual([0, 0, 0])
    expect(bytes).toBeGreaterThan(0)
  })

  test('evictHead: an away client\'s head goes back to the store only, and comes back first', () => {
    const s = new Session('c', 5)
    s.store = new MemoryStore()
    fill(s, 1, 5, false)
    fill(s, 6, 8, true)
    s.evictHead()
    expect([s.headCount, s.spilledCount, s.headBytes]).toEqual([0, 8, 0])
    fill(s, 9, 9, true)
    expect(drain(s)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9'])
  })

  test('a store that cannot be read: nothing is forgotten, the next read continues', () => {
    const store = new MemoryStore()
    const s = new Session('c', 5)
    s.store = store
    fill(s, 1, 3, true)
    const real = store.pageQueued.bind(store)
    let failing = true
    store.pageQueued = (id, after, limit) => {
      if (failing) throw new StoreError('io', 'disk unavailable')
      return real(id, after, limit)
    }
    expect(s.shiftQueued()).toBeUndefined()
    expect([s.queuedCount, s.spilledCount]).toEqual([3, 3])
    failing = false
    expect(drain(s)).toEqual(['m1', 'm2', 'm3'])
  })

  test('entries the store does not have are forgotten (counts stay true); reads go page by page, a few entries while the client is away', () => {
    const s = new Session('c', 5)
    s.store = new MemoryStore()
    s.restoreSpill(5, 50)
    expect(s.shiftQueued()).toBeUndefined()
    expect([s.queuedCount, s.queuedBytes]).toEqual([0, 0])
    fill(s, 1, 600, true)
    expect(s.peekQueued()?.msg.payload.toString()).toBe('m1')
    expect([s.headCount, s.spilledCount]).toEqual([16, 584])
    s.evictHead()
    expect([s.headCount, s.spilledCount, s.headBytes]).toEqual([0, 600, 0])
    expect(drain(s).length).toBe(600)
  })
})

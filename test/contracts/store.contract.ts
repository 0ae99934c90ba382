import { afterEach, beforeEach, describe, expect, test } from 'bun:test'
import type { Message } from '../../src/codec/message.ts'
import type { Delivery } from '../../src/session/types.ts'
import type { SessionRecord, Store } from '../../src/store/types.ts'

export interface StoreFactory {
  /** A fresh, unopened store. */
  make(): Promise<Store>
  /** A second store over the same data as the last made one (durable stores), or null. */
  reopen?: () => Promise<Store>
  cleanup?: () => void
}

const msg = (topic: string, payload: string, extra: Partial<Message> = {}): Message => ({
  topic, payload: Buffer.from(payload), qos: 1, retain: true, props: null, expiresAt: 0, origin: 'c1', ...extra,
})
const delivery = (m: Message, extra: Partial<Delivery> = {}): Delivery => ({ msg: m, qos: 1, retain: false, subIds: null, ...extra })
const session = (clientId: string, extra: Partial<SessionRecord> = {}): SessionRecord => ({
  clientId, version: 5, expiryInterval: 60, disconnectedAt: 1000, subscriptions: [], will: null, willAt: 0, ...extra,
})

/**
 * The behaviour every Store implementation must have. Each implementation's test file calls
 * runStoreContract with a factory; nothing here knows which store it tests. Every write is
 * followed by commit(), as the broker does.
 */
export function runStoreContract(name: string, factory: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store

    beforeEach(async () => {
      store = await factory.make()
      await store.open()
    })

    afterEach(async () => {
      await store.close()
      factory.cleanup?.()
    })

    test('retained: set, get, replace, delete, count, match by filter', () => {
      expect(store.retainedCount()).toBe(0)
      store.setRetained(msg('a/b', 'one'))
      store.setRetained(msg('a/c', 'two'))
      store.setRetained(msg('$SYS/x', 'sys'))
      store.commit()
      expect(store.retainedCount()).toBe(3)
      store.setRetained(msg('a/b', 'three'))
      expect(store.retainedCount()).toBe(3)
      expect(store.getRetained('a/b')?.payload.toString()).toBe('three')
      store.deleteRetained('a/b')
      store.commit()
      expect(store.getRetained('a/b')).toBeUndefined()
      const found: string[] = []
      store.matchRetained('#', (m) => found.push(m.topic))
      expect(found).toEqual(['a/c'])
      expect([...store.allRetained()].map((m) => m.topic).sort()).toEqual(['$SYS/x', 'a/c'])
    })

    test('retained bytes: topic + payload of each retained message, kept through replace and delete', () => {
      expect(store.retainedBytes()).toBe(0)
      store.setRetained(msg('a/b', 'one'))
      store.setRetained(msg('a/c', 'twotwo'))
      expect(store.retainedBytes()).toBe(3 + 3 + 3 + 6)
      store.setRetained(msg('a/b', 'x'))
      expect(store.retainedBytes()).toBe(3 + 1 + 3 + 6)
      store.deleteRetained('a/c')
      store.deleteRetained('no/such')
      store.commit()
      expect(store.retainedBytes()).toBe(3 + 1)
    })

    test('sessions: the owner (username) is kept; no owner loads as undefined', () => {
      store.saveSession(session('owned', { owner: 'alice' }))
      store.saveSession(session('anon'))
      store.commit()
      const owners = Object.fromEntries(store.load().sessions.map((r) => [r.clientId, r.owner]))
      expect(owners).toEqual({ owned: 'alice', anon: undefined })
    })

    test('sessions: save, replace, load, delete; subscriptions and will kept', () => {
      const will = { msg: msg('w/t', 'bye', { retain: false, qos: 2, props: { contentType: 'text/plain', userProps: Buffer.from([0x26, 0, 1, 0x6b, 0, 1, 0x76]) } }), delay: 30, expiry: 10 }
      const rec = session('c1', {
        subscriptions: [{ clientId: 'c1', raw: '$share/g/a/+', filter: 'a/+', group: 'g', qos: 1, noLocal: false, retainAsPublished: true, retainHandling: 2, subId: 7 }],
        will, willAt: 5000,
      })
      store.saveSession(rec)
      store.saveSession(session('c2', { version: 4 }))
      store.commit()
      const loaded = store.load().sessions.sort((a, b) => a.clientId.localeCompare(b.clientId))
      expect(loaded.map((r) => r.clientId)).toEqual(['c1', 'c2'])
      const c1 = loaded[0]!
      expect(c1.subscriptions).toEqual(rec.subscriptions)
      expect(c1.expiryInterval).toBe(60)
      expect(c1.disconnectedAt).toBe(1000)
      expect(c1.willAt).toBe(5000)
      expect(c1.will?.delay).toBe(30)
      expect(c1.will?.expiry).toBe(10)
      expect(c1.will?.msg.topic).toBe('w/t')
      expect(c1.will?.msg.qos).toBe(2)
      expect(c1.will?.msg.payload.toString()).toBe('bye')
      expect(c1.will?.msg.props?.contentType).toBe('text/plain')
      expect([...c1.will!.msg.props!.userProps!]).toEqual([0x26, 0, 1, 0x6b, 0, 1, 0x76])
      expect(loaded[1]!.version).toBe(4)
      store.saveSession(session('c1', { expiryInterval: 5 }))
      store.deleteSession('c2')
      store.commit()
      const after = store.load().sessions
      expect(after.map((r) => [r.clientId, r.expiryInterval, r.will])).toEqual([['c1', 5, null]])
    })

    test('outbox: load() gives the inflight entries in seq order with state, packet id and message, and sums up the queued ones', () => {
      const m1 = msg('t/1', 'one', { qos: 2, expiresAt: 99_999_999_999_999, props: { responseTopic: 'r', correlationData: Buffer.from([1, 2]) } })
      const m2 = msg('t/2', 'two')
      store.putOutbox('c1', { seq: 2, delivery: delivery(m2, { seq: 2, subIds: [3, 4] }), packetId: 0, state: 'queued' })
      store.putOutbox('c1', { seq: 1, delivery: delivery(m1, { seq: 1, qos: 2, retain: true }), packetId: 10, state: 'publish' })
      store.putOutbox('c1', { seq: 3, delivery: delivery(m1, { seq: 3 }), packetId: 11, state: 'pubrel' })
      store.putOutbox('c2', { seq: 1, delivery: delivery(m1, { seq: 1 }), packetId: 0, state: 'queued' })
      store.commit()
      let r = store.load()
      expect(r.outbox.get('c1')!.map((e) => [e.seq, e.packetId, e.state, e.delivery.msg.topic, e.delivery.qos, e.delivery.retain])).toEqual([
        [1, 10, 'publish', 't/1', 2, true], [3, 11, 'pubrel', 't/1', 1, false],
      ])
      const e1 = r.outbox.get('c1')![0]!.delivery
      expect(e1.msg.payload.toString()).toBe('one')
      expect(e1.msg.qos).toBe(2)
      expect(e1.msg.expiresAt).toBe(99_999_999_999_999)
      expect(e1.msg.props?.responseTopic).toBe('r')
      expect([...e1.msg.props!.correlationData!]).toEqual([1, 2])
      expect(r.outbox.get('c2')).toBeUndefined()
      // queued entries are summed up (topic + payload bytes), not read
      expect(r.queued.get('c1')).toEqual({ count: 1, bytes: 3 + 3, lastSeq: 2 })
      expect(r.queued.get('c2')).toEqual({ count: 1, bytes: 3 + 3, lastSeq: 1 })
      const [q] = store.pageQueued('c1', 0, 10)
      expect([q!.seq, q!.packetId, q!.state, q!.delivery.msg.payload.toString(), q!.delivery.subIds]).toEqual([2, 0, 'queued', 'two', [3, 4]])
      // state change replaces the entry; removal deletes it
      store.putOutbox('c1', { seq: 1, delivery: delivery(m1, { seq: 1, qos: 2 }), packetId: 10, state: 'pubrel' })
      store.removeOutbox('c1', 2)
      store.removeOutbox('c1', 3)
      store.commit()
      r = store.load()
      expect(r.outbox.get('c1')!.map((e) => [e.seq, e.state])).toEqual([[1, 'pubrel']])
      expect(r.queued.get('c1')).toBeUndefined()
      expect(store.pageQueued('c1', 0, 10)).toEqual([])
    })

    test('pageQueued: queued entries after a seq, in seq order, at most limit, queued writes included before commit', () => {
      for (let seq = 1; seq <= 10; seq++) {
        const state = seq === 4 ? 'publish' : 'queued'
        store.putOutbox('p', { seq, delivery: delivery(msg(`q/${seq}`, `m${seq}`), { seq }), packetId: seq === 4 ? 4 : 0, state })
      }
      store.putOutbox('other', { seq: 5, delivery: delivery(msg('o', 'x'), { seq: 5 }), packetId: 0, state: 'queued' })
      // not committed yet: a page still sees them (the broker reads back what it just queued)
      const seqs = (after: number, limit: number) => store.pageQueued('p', after, limit).map((e) => e.seq)
      expect(seqs(0, 3)).toEqual([1, 2, 3])
      expect(seqs(3, 3)).toEqual([5, 6, 7])
      expect(seqs(7, 100)).toEqual([8, 9, 10])
      expect(seqs(10, 100)).toEqual([])
      expect(store.pageQueued('p', 4, 1)[0]!.delivery.msg.payload.toString()).toBe('m5')
      expect(store.commit()).toBe(0)
      expect(store.pending).toBe(false)
      store.removeOutbox('p', 5)
      store.commit()
      expect(seqs(3, 2)).toEqual([6, 7])
      expect(store.pageQueued('nobody', 0, 10)).toEqual([])
    })

    test('inbound QoS 2 ids: add, remove, load', () => {
      store.addInboundQos2('c1', 5)
      store.addInboundQos2('c1', 3)
      store.addInboundQos2('c1', 5)
      store.addInboundQos2('c2', 1)
      store.removeInboundQos2('c2', 1)
      store.commit()
      const q = store.load().inboundQos2
      expect(q.get('c1')).toEqual([3, 5])
      expect(q.get('c2') ?? []).toEqual([])
    })

    test('deleteSession removes its outbox and QoS 2 state too', () => {
      store.saveSession(session('gone'))
      store.putOutbox('gone', { seq: 1, delivery: delivery(msg('x', 'y'), { seq: 1 }), packetId: 0, state: 'queued' })
      store.addInboundQos2('gone', 9)
      store.commit()
      store.deleteSession('gone')
      store.commit()
      const r = store.load()
      expect(r.sessions).toEqual([])
      expect(r.outbox.get('gone') ?? []).toEqual([])
      expect(r.inboundQos2.get('gone') ?? []).toEqual([])
    })

    test('a loaded record is a copy, not the stored object', () => {
      store.saveSession(session('c', { expiryInterval: 1 }))
      store.commit()
      store.load().sessions[0]!.expiryInterval = 99
      expect(store.load().sessions[0]!.expiryInterval).toBe(1)
    })

    test('commit leaves nothing pending', () => {
      store.setRetained(msg('p', 'x'))
      store.saveSession(session('c'))
      expect(store.commit()).toBe(0)
      expect(store.pending).toBe(false)
    })

    if (factory.reopen) {
      test('a message delivered again after its last outbox entry went is still there after a reopen', async () => {
        const m = msg('again/1', 'retained twice')
        store.putOutbox('a', { seq: 1, delivery: delivery(m, { seq: 1 }), packetId: 0, state: 'queued' })
        store.commit()
        store.removeOutbox('a', 1)
        store.commit()
        store.putOutbox('b', { seq: 1, delivery: delivery(m, { seq: 1 }), packetId: 0, state: 'queued' })
        store.commit()
        await store.close()
        store = await factory.reopen!()
        await store.open()
        expect(store.pageQueued('b', 0, 10).map((e) => e.delivery.msg.payload.toString())).toEqual(['retained twice'])
      })

      test('everything committed is there after a reopen', async () => {
        store.setRetained(msg('keep/1', 'r1', { qos: 2, expiresAt: 123 }))
        store.saveSession(session('c1', { subscriptions: [{ clientId: 'c1', raw: 'a/#', filter: 'a/#', group: null, qos: 2, noLocal: true, retainAsPublished: false, retainHandling: 1, subId: 0 }] }))
        store.putOutbox('c1', { seq: 4, delivery: delivery(msg('a/b', 'q'), { seq: 4 }), packetId: 0, state: 'queued' })
        store.addInboundQos2('c1', 77)
        store.commit()
        await store.close()
        store = await factory.reopen!()
        await store.open()
        expect(store.getRetained('keep/1')?.payload.toString()).toBe('r1')
        expect(store.getRetained('keep/1')?.expiresAt).toBe(123)
        // topic + payload + 5 bytes for its Message Expiry Interval
        expect(store.retainedBytes()).toBe('keep/1'.length + 2 + 5)
        const r = store.load()
        expect(r.sessions.map((s) => s.subscriptions[0]!.filter)).toEqual(['a/#'])
        expect(r.queued.get('c1')).toEqual({ count: 1, bytes: 3 + 1, lastSeq: 4 })
        expect(store.pageQueued('c1', 0, 10).map((e) => e.delivery.msg.payload.toString())).toEqual(['q'])
        expect(r.inboundQos2.get('c1')).toEqual([77])
      })
    }
  })
}

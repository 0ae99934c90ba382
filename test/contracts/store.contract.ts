import { afterEach, beforeEach, describe, expect, test } from 'bun:test'
import type { Message } from '../../src/codec/message.ts'
import type { SessionRecord, Store } from '../../src/store/types.ts'

/**
 * The behaviour every Store implementation must have. Each implementation's test file calls
 * runStoreContract with a factory; nothing here knows which store it tests.
 */
export function runStoreContract(name: string, make: () => Promise<{ store: Store; cleanup?: () => void }>): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store
    let cleanup: (() => void) | undefined

    beforeEach(async () => {
      const made = await make()
      store = made.store
      cleanup = made.cleanup
      await store.open()
    })

    afterEach(async () => {
      await store.close()
      cleanup?.()
    })

    const msg = (topic: string, payload: string, extra: Partial<Message> = {}): Message => ({
      topic, payload: Buffer.from(payload), qos: 1, retain: true, props: null, expiresAt: 0, origin: 'c1', ...extra,
    })

    test('retained: set, get, replace, delete, count', () => {
      expect(store.retainedCount()).toBe(0)
      store.setRetained(msg('a/b', 'one'))
      store.setRetained(msg('a/c', 'two'))
      expect(store.retainedCount()).toBe(2)
      store.setRetained(msg('a/b', 'three'))
      expect(store.retainedCount()).toBe(2)
      expect(store.getRetained('a/b')?.payload.toString()).toBe('three')
      store.deleteRetained('a/b')
      expect(store.getRetained('a/b')).toBeUndefined()
      expect([...store.allRetained()].map((m) => m.topic)).toEqual(['a/c'])
    })

    test('retained: properties and expiry survive', () => {
      const userProps = Buffer.from([0x26, 0, 1, 0x6b, 0, 1, 0x76])
      store.setRetained(msg('p', 'x', {
        qos: 2, expiresAt: 1234567890123,
        props: { payloadFormatIndicator: 1, contentType: 'text/plain', responseTopic: 'r', correlationData: Buffer.from([1, 2]), userProps },
      }))
      const m = store.getRetained('p')!
      expect(m.qos).toBe(2)
      expect(m.expiresAt).toBe(1234567890123)
      expect(m.props?.contentType).toBe('text/plain')
      expect(m.props?.responseTopic).toBe('r')
      expect([...m.props!.correlationData!]).toEqual([1, 2])
      expect([...m.props!.userProps!]).toEqual([...userProps])
    })

    test('sessions: save, replace, load, delete', () => {
      const rec: SessionRecord = {
        clientId: 'c1', version: 5, expiryInterval: 60, disconnectedAt: 1000,
        subscriptions: [{ clientId: 'c1', raw: '$share/g/a/+', filter: 'a/+', group: 'g', qos: 1, noLocal: false, retainAsPublished: true, retainHandling: 2, subId: 7 }],
      }
      store.saveSession(rec)
      store.saveSession({ ...rec, clientId: 'c2', version: 4, subscriptions: [] })
      expect(store.loadSessions().sort((a, b) => a.clientId.localeCompare(b.clientId))).toEqual([rec, { ...rec, clientId: 'c2', version: 4, subscriptions: [] }])
      store.saveSession({ ...rec, expiryInterval: 5 })
      expect(store.loadSessions().find((r) => r.clientId === 'c1')?.expiryInterval).toBe(5)
      store.deleteSession('c1')
      expect(store.loadSessions().map((r) => r.clientId)).toEqual(['c2'])
    })

    test('sessions: a loaded record is a copy, not the stored object', () => {
      store.saveSession({ clientId: 'c', version: 4, expiryInterval: 1, disconnectedAt: 0, subscriptions: [] })
      const loaded = store.loadSessions()[0]!
      loaded.expiryInterval = 99
      expect(store.loadSessions()[0]!.expiryInterval).toBe(1)
    })
  })
}

/**
 * SUBACK and UNSUBACK promise that the change is durable: when the store cannot commit it
 * (full), the client is told so instead (v5 SUBACK 0x97 / v3 0x80, v5 UNSUBACK 0x80) and the
 * subscription is not made. A store that refuses commits on demand stands in for a full disk.
 */
import { describe, expect, test } from 'bun:test'
import type { ISubackPacket, IUnsubackPacket } from 'mqtt-packet'
import { MemoryStore } from '../../src/store/memory.ts'
import type { SessionRecord, Store } from '../../src/store/types.ts'
import { persistentConnect } from '../helpers/open.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

/** A durable-looking store whose commits drop every buffered write while `state.full` is set. */
function fullableStore(): { store: Store; state: { full: boolean } } {
  const inner = new MemoryStore()
  const state = { full: false, dirty: 0 }
  const store = new Proxy(inner, {
    get(target, key) {
      if (key === 'kind') return 'sqlite'
      if (key === 'pending') return state.dirty > 0
      if (key === 'saveSession') return (rec: SessionRecord) => { state.dirty++; if (!state.full) target.saveSession(rec) }
      if (key === 'commit') return () => { const dropped = state.full ? state.dirty : 0; state.dirty = 0; return dropped }
      const value = Reflect.get(target, key, target) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  }) as unknown as Store
  return { store, state }
}

for (const version of [4, 5] as const) describe(`MQTT ${version === 5 ? '5' : '3.1.1'}: store cannot commit`, () => {
  test('SUBACK reports the failure, the subscription is not made, and a later SUBSCRIBE succeeds', async () => {
    const { store, state } = fullableStore()
    await using br = await startBroker({}, { store })
    const { client: sub } = await RawClient.open(br.port, persistentConnect(version, `sub-${version}`))
    const { client: pub } = await RawClient.open(br.port, { version, clientId: `pub-${version}` })
    try {
      state.full = true
      sub.send(b.subscribe(1, [{ topic: 'cf/a', qos: 1 }], { version }))
      const ack = (await sub.nextOf('suback')) as ISubackPacket
      expect(ack.granted).toEqual([version === 5 ? 0x97 : 0x80])
      pub.send(b.publish({ topic: 'cf/a', payload: 'lost?', version }))
      await sub.expectNothing(150)

      state.full = false
      sub.send(b.subscribe(2, [{ topic: 'cf/a', qos: 1 }], { version }))
      const ok = (await sub.nextOf('suback')) as ISubackPacket
      expect(ok.granted).toEqual([1])
      pub.send(b.publish({ topic: 'cf/a', payload: 'delivered', version }))
      const p = await sub.nextOf('publish')
      expect(p.cmd === 'publish' ? p.payload.toString() : '').toBe('delivered')
    } finally {
      sub.close()
      pub.close()
    }
  })
})

test('MQTT 5: UNSUBACK says 0x80 when the removal could not be made durable', async () => {
  const { store, state } = fullableStore()
  await using br = await startBroker({}, { store })
  const { client } = await RawClient.open(br.port, persistentConnect(5, 'unsub-5'))
  try {
    client.send(b.subscribe(1, [{ topic: 'cf/u', qos: 0 }], { version: 5 }))
    await client.nextOf('suback')
    state.full = true
    client.send(b.unsubscribe(2, ['cf/u', 'cf/none'], { version: 5 }))
    const ack = (await client.nextOf('unsuback')) as IUnsubackPacket
    expect(ack.granted).toEqual([0x80, 0x11])
  } finally {
    client.close()
  }
})

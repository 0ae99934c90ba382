/**
 * The memory budget's counters (limits.memory, src/broker/memory.ts) stay true: what clients
 * made the broker hold is taken off again once they are gone, offline queues cannot lock
 * everyone out, and a relief pass closes only as many connections as it needs.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

const small = Buffer.alloc(16 * 1024, 0x61)

describe('memory accounting', () => {
  test('persistent QoS 1 subscribers that vanish while their output waits for the group commit: afterwards nothing counts (memory.used 0)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmqtt-mem-'))
    try {
      await using tb = await startBroker({ VMQTT_DATA_STORE: 'sqlite', VMQTT_DATA_DIR: dir, VMQTT_DATA_COMMIT_INTERVAL: '50', VMQTT_LIMITS_MAX_INFLIGHT: '65535' })
      const mem = tb.broker.memory
      const { client: pub } = await RawClient.open(tb.port, { version: 4, clientId: 'leak-pub' })
      let stop = false
      let id = 0
      const flood = (async () => {
        while (!stop) {
          for (let i = 0; i < 20; i++) { id = id % 65000 + 1; pub.send(b.publish({ topic: 'leak/t', payload: small, qos: 1, packetId: id, version: 4 })) }
          for (let i = 0; i < 20; i++) await pub.nextOf('puback', 5000)
        }
      })()
      for (let round = 0; round < 4; round++) {
        const subs = await Promise.all(Array.from({ length: 8 }, async (_, k) => {
          const { client } = await RawClient.open(tb.port, { version: 4, clientId: `leak-sub-${round}-${k}`, clean: false })
          client.send(b.subscribe(1, [{ topic: 'leak/t', qos: 1 }], { version: 4 }))
          await client.nextOf('suback')
          client.pause()
          return client
        }))
        // destroyed while output to them is unsent (they do not read) and more waits for the commit
        await until('output to the subscribers to back up', () => subs.every((_, k) => (tb.broker.connectionOf(`leak-sub-${round}-${k}`)?.backlogBytes ?? 0) > 0))
        for (const s of subs) s.destroy()
        await until('the subscribers to be gone', () => subs.every((_, k) => !tb.broker.isOnline(`leak-sub-${round}-${k}`)))
      }
      stop = true
      await flood.catch(() => {})
      await pub.close()
      await until('no connection to be left', () => tb.broker.connectionCount === 0)
      tb.broker.commits.flush()
      expect({ pending: mem.pending, partial: mem.partial, used: mem.used }).toEqual({ pending: 0, partial: 0, used: 0 })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})

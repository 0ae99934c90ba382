/**
 * The protocol level a refused TLS client's CONNECT asks for (src/transport/tls-refusal.ts),
 * read from CONNECTs built by the independent packet builder, whole, cut short and damaged.
 */
import { describe, expect, test } from 'bun:test'
import { connectLevel } from '../../src/transport/tls-refusal.ts'
import * as b from '../helpers/packet-builder.ts'

describe('connectLevel', () => {
  for (const version of [3, 4, 5] as const) {
    test(`v${version === 3 ? '3.1 (MQIsdp)' : version}: the level from the whole CONNECT and from any prefix long enough`, () => {
      const c = b.connect({ version, clientId: 'x'.repeat(300) })
      expect(connectLevel(c)).toBe(version)
      const levelAt = c.indexOf(version === 3 ? 'MQIsdp' : 'MQTT') + (version === 3 ? 6 : 4)
      for (let n = 0; n <= levelAt; n++) expect(connectLevel(c.subarray(0, n))).toBeUndefined()
      expect(connectLevel(c.subarray(0, levelAt + 1))).toBe(version)
    })
  }

  test('not a CONNECT: null (nothing is answered)', () => {
    expect(connectLevel(b.publish({ topic: 't', payload: 'p' }))).toBeNull()
    expect(connectLevel(Buffer.from('GET / HTTP/1.1\r\n'))).toBeNull()
    expect(connectLevel(b.connect({ version: 4, protocolName: 'MQTX' }))).toBeNull()
    expect(connectLevel(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]))).toBeNull()
  })
})

/**
 * Issue 13 section 4: before login, bounded memory, bounded CPU, no stalls. A CONNECT or AUTH
 * larger than limits.maxConnectPacketSize is refused as soon as its length is read; no packet
 * with millions of properties or filters blocks the event loop; password checks are capped and
 * queued; failed-login delays are per address and username.
 */
import { describe, expect, test } from 'bun:test'
import { connectWithProps, userProps } from '../helpers/big-packets.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

/** The fixed header of a CONNECT claiming `length` bytes, then the start of a v5 or v3.1.1 variable header. */
const connectHeader = (length: number, level: 4 | 5) => Buffer.from([0x10, ...b.varint(length), ...b.str('MQTT'), level, 0x02, 0, 60])

describe('packets before authentication are small (limits.maxConnectPacketSize)', () => {
  test('v5: a CONNECT claiming 16,000,000 bytes gets CONNACK 0x95 as soon as its length is read', async () => {
    await using broker = await startBroker()
    const c = await RawClient.connect(broker.port, { version: 5 })
    c.send(connectHeader(16_000_000, 5))
    c.send(Buffer.alloc(256 * 1024))
    const ack = await c.nextOf('connack')
    expect(ack.cmd === 'connack' ? ack.reasonCode : -1).toBe(0x95)
    await c.closed()
    expect(broker.broker.connectionCount).toBe(0)
  })

  test('v3.1.1: the same CONNECT is closed without a CONNACK', async () => {
    await using broker = await startBroker()
    const c = await RawClient.connect(broker.port, { version: 4 })
    c.send(connectHeader(16_000_000, 4))
    await c.closed()
    await c.expectNothing(0, { allowClose: true })
  })

  test('the cap is 64 KiB by default and configurable', async () => {
    const props = userProps(Math.ceil(70_000 / 5))
    {
      await using broker = await startBroker()
      const c = await RawClient.connect(broker.port, { version: 5 })
      c.send(connectWithProps(props, 'big-connect'))
      const ack = await c.nextOf('connack')
      expect(ack.cmd === 'connack' ? ack.reasonCode : -1).toBe(0x95)
    }
    {
      await using broker = await startBroker({ VMQTT_LIMITS_MAX_CONNECT_PACKET_SIZE: '131072' })
      const c = await RawClient.connect(broker.port, { version: 5 })
      c.send(connectWithProps(props, 'big-connect'))
      const ack = await c.nextOf('connack')
      expect(ack.cmd === 'connack' ? ack.reasonCode : -1).toBe(0)
      await c.close()
    }
  })
})

/**
 * Malformed packets and protocol errors after a completed CONNECT. Each one must close only the
 * offending connection (v5: DISCONNECT with the reason code first [MQTT-4.13.1-1]) while the broker
 * keeps serving a bystander that was connected before and a client that connects afterwards.
 * Bytes come from the independent packet builder, never from src/codec.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Logger } from '../../src/log.ts'
import { fuzzInput } from '../helpers/fuzz.ts'
import * as b from '../helpers/packet-builder.ts'
import { prng } from '../helpers/prng.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker, type TestBroker } from '../helpers/start-broker.ts'

type V = 4 | 5
const MALFORMED = 0x81
const PROTOCOL_ERROR = 0x82
const TOPIC_NAME_INVALID = 0x90

/** Internal errors the broker logs (anything that is not a clean protocol-violation close). */
const internalErrors: string[] = []
const captureLog: Logger = {
  debug() {}, info() {}, warn() {},
  error(msg, fields) { internalErrors.push(`${msg} ${JSON.stringify(fields ?? {})}`) },
  enabled: (level) => level === 'error',
}

let tb: TestBroker
let seq = 0
beforeAll(async () => { tb = await startBroker({}, { log: captureLog }) })
afterAll(async () => { await tb.close() })

/** A well-behaved client that subscribes to a private topic; check() proves it still gets messages. */
async function bystander(version: V) {
  const id = `bystander-${++seq}`
  const { client, connack } = await RawClient.open(tb.port, { version, clientId: id })
  expect(connack.cmd).toBe('connack')
  client.send(b.subscribe(1, [{ topic: `ctl/${id}`, qos: 1 }], { version }))
  expect((await client.nextOf('suback')).cmd).toBe('suback')
  return {
    client,
    async check(): Promise<void> {
      // a fresh client publishes to the bystander: the broker still accepts connections and routes
      const { client: pub } = await RawClient.open(tb.port, { version, clientId: `${id}-pub` })
      try {
        pub.send(b.publish({ topic: `ctl/${id}`, payload: 'still here', qos: 1, packetId: 7, version }))
        expect((await pub.nextOf('puback')).messageId).toBe(7)
        const p = await client.nextOf('publish')
        expect(p.cmd === 'publish' && p.topic === `ctl/${id}` && p.payload.toString() === 'still here').toBe(true)
        expect(client.isClosed).toBe(false)
      } finally {
        await pub.close()
      }
    },
  }
}

/**
 * Connects (CONNECT + CONNACK), sends `bad`, and asserts the server closes this connection:
 * v5 gets DISCONNECT with one of `reasons` first, v3.1.1 is closed without any packet.
 */
async function expectRejected(version: V, bad: Uint8Array | number[], reasons: number[]): Promise<void> {
  const by = await bystander(version)
  try {
    const { client, connack } = await RawClient.open(tb.port, { version, clientId: `offender-${++seq}` })
    try {
      expect(connack.cmd === 'connack' && (version === 5 ? connack.reasonCode : connack.returnCode)).toBe(0)
      client.send(bad)
      if (version === 5) {
        const d = await client.next()
        expect(d.cmd).toBe('disconnect')
        expect(reasons).toContain(d.cmd === 'disconnect' ? d.reasonCode ?? 0 : -1)
      }
      await client.closed()
      // v3.1.1 has no DISCONNECT from the server; v5 sends exactly one packet before closing
      await expect(client.next(100)).rejects.toThrow(/closed/)
    } finally {
      client.destroy()
    }
    await by.check()
  } finally {
    await by.client.close()
  }
}

/** PUBLISH with an arbitrary topic byte sequence (for UTF-8 tests). */
function publishRawTopic(version: V, topic: number[]): Buffer {
  return b.frame(b.TYPE.PUBLISH, 0, [...b.u16(topic.length), ...topic, ...(version === 5 ? [0] : []), ...Buffer.from('x')])
}

const props = (version: V) => (version === 5 ? [0] : [])

describe.each([4, 5] as const)('MQTT v%d', (version) => {
  test('[MQTT-1.5.5-1] a remaining length of 5 bytes is malformed (0x81)', async () => {
    await expectRejected(version, [0x30, 0x80, 0x80, 0x80, 0x80, 0x01], [MALFORMED])
  })

  test('[MQTT-3.3.1-4] PUBLISH with QoS 3 is malformed (0x81)', async () => {
    const ok = b.publish({ topic: 'm/q3', qos: 2, packetId: 1, version })
    ok[0] = 0x36
    await expectRejected(version, ok, [MALFORMED])
  })

  test('[MQTT-3.3.1-2] PUBLISH QoS 0 with DUP set is malformed (0x81)', async () => {
    await expectRejected(version, b.publish({ topic: 'm/dup', qos: 0, dup: true, version }), [MALFORMED])
  })

  test('[MQTT-3.3.2-2] PUBLISH topic name with a wildcard closes the connection (0x90)', async () => {
    await expectRejected(version, b.publish({ topic: 'm/+/x', version }), [TOPIC_NAME_INVALID])
  })

  test('[MQTT-3.3.2-2] PUBLISH topic name with # closes the connection (0x90)', async () => {
    await expectRejected(version, b.publish({ topic: 'm/#', version }), [TOPIC_NAME_INVALID])
  })

  test('[MQTT-1.5.4-1] topic name with ill-formed UTF-8 (0xC3 0x28) is malformed (0x81)', async () => {
    await expectRejected(version, publishRawTopic(version, [0x61, 0x2f, 0xc3, 0x28]), [MALFORMED])
  })

  test('[MQTT-1.5.4-1] SUBSCRIBE filter with ill-formed UTF-8 is malformed (0x81)', async () => {
    const bad = b.frame(b.TYPE.SUBSCRIBE, 2, [...b.u16(3), ...props(version), 0, 3, 0x61, 0xc3, 0x28, 0])
    await expectRejected(version, bad, [MALFORMED])
  })

  test('[MQTT-1.5.4-2] topic name containing U+0000 is malformed (0x81)', async () => {
    await expectRejected(version, publishRawTopic(version, [0x61, 0x00, 0x62]), [MALFORMED])
  })

  test('[MQTT-1.5.4-2] SUBSCRIBE filter containing U+0000 is malformed (0x81)', async () => {
    const bad = b.frame(b.TYPE.SUBSCRIBE, 2, [...b.u16(3), ...props(version), 0, 3, 0x61, 0x00, 0x62, 0])
    await expectRejected(version, bad, [MALFORMED])
  })

  test('[MQTT-3.8.1-1] SUBSCRIBE with fixed header flags 0000 is malformed (0x81)', async () => {
    const bad = b.subscribe(4, [{ topic: 'm/s', qos: 0 }], { version })
    bad[0] = 0x80
    await expectRejected(version, bad, [MALFORMED])
  })

  test('[MQTT-3.10.1-1] UNSUBSCRIBE with fixed header flags 0000 is malformed (0x81)', async () => {
    const bad = b.unsubscribe(4, ['m/s'], { version })
    bad[0] = 0xa0
    await expectRejected(version, bad, [MALFORMED])
  })

  test('[MQTT-3.8.3-3] SUBSCRIBE with no topic filter closes the connection (0x82)', async () => {
    await expectRejected(version, b.frame(b.TYPE.SUBSCRIBE, 2, [...b.u16(5), ...props(version)]), [PROTOCOL_ERROR])
  })

  test('[MQTT-3.10.3-2] UNSUBSCRIBE with no topic filter closes the connection (0x82)', async () => {
    await expectRejected(version, b.frame(b.TYPE.UNSUBSCRIBE, 2, [...b.u16(5), ...props(version)]), [PROTOCOL_ERROR])
  })

  test('[MQTT-3.6.1-1] PUBREL with fixed header flags 0000 is malformed (0x81)', async () => {
    await expectRejected(version, b.pubrel(9, { flags: 0 }), [MALFORMED])
  })

  test('[MQTT-2.2.2-2] PUBACK with fixed header flags 0010 is malformed (0x81)', async () => {
    await expectRejected(version, b.puback(9, { flags: 2 }), [MALFORMED])
  })

  test('reserved packet type 0 (forbidden) closes the connection', async () => {
    await expectRejected(version, [0x00, 0x00], [MALFORMED, PROTOCOL_ERROR])
  })

  test('reserved packet type 0 with a body closes the connection', async () => {
    await expectRejected(version, [0x00, 0x02, 0x00, 0x01], [MALFORMED, PROTOCOL_ERROR])
  })

  test('CONNACK sent by a client is a protocol error (0x82)', async () => {
    await expectRejected(version, b.connack({ version }), [PROTOCOL_ERROR])
  })

  test('SUBACK, UNSUBACK and PINGRESP sent by a client are protocol errors (0x82)', async () => {
    await expectRejected(version, b.suback(1, [0], { version }), [PROTOCOL_ERROR])
    await expectRejected(version, b.unsuback(1, { version, codes: [0] }), [PROTOCOL_ERROR])
    await expectRejected(version, b.pingresp(), [PROTOCOL_ERROR])
  })

  test('PINGREQ with a body is malformed (0x81)', async () => {
    await expectRejected(version, b.frame(b.TYPE.PINGREQ, 0, [0]), [MALFORMED])
  })

  test('[MQTT-3.1.0-2] a second CONNECT is a protocol error (0x82)', async () => {
    await expectRejected(version, b.connect({ version, clientId: 'again' }), [PROTOCOL_ERROR])
  })

  test('[MQTT-2.3.1-1] [MQTT-2.2.1-3] PUBLISH QoS 1 with packet identifier 0 is malformed (0x81)', async () => {
    await expectRejected(version, b.publish({ topic: 'm/id0', qos: 1, packetId: 0, version }), [MALFORMED])
  })

  test('[MQTT-2.3.1-1] [MQTT-2.2.1-3] SUBSCRIBE with packet identifier 0 is malformed (0x81)', async () => {
    await expectRejected(version, b.subscribe(0, ['m/id0'], { version }), [MALFORMED])
  })

  describe('truncated packet bodies are malformed (0x81)', () => {
    const cases: [string, () => Buffer][] = [
      ['PUBLISH empty body', () => b.frame(b.TYPE.PUBLISH, 0, [])],
      ['PUBLISH topic length beyond the packet', () => b.frame(b.TYPE.PUBLISH, 0, [0, 10, 0x61, 0x62])],
      ['PUBLISH QoS 1 without packet identifier', () => b.frame(b.TYPE.PUBLISH, 2, [...b.str('m/t')])],
      ['PUBLISH QoS 1 with half a packet identifier', () => b.frame(b.TYPE.PUBLISH, 2, [...b.str('m/t'), 0])],
      ['PUBACK with one byte', () => b.frame(b.TYPE.PUBACK, 0, [0])],
      ['PUBREC with no body', () => b.frame(b.TYPE.PUBREC, 0, [])],
      ['PUBREL with one byte', () => b.frame(b.TYPE.PUBREL, 2, [1])],
      ['PUBCOMP with one byte', () => b.frame(b.TYPE.PUBCOMP, 0, [1])],
      ['SUBSCRIBE with only one byte', () => b.frame(b.TYPE.SUBSCRIBE, 2, [0])],
      ['SUBSCRIBE filter length beyond the packet', () => b.frame(b.TYPE.SUBSCRIBE, 2, [...b.u16(1), ...props(version), 0, 9, 0x61])],
      ['SUBSCRIBE without the options byte', () => b.frame(b.TYPE.SUBSCRIBE, 2, [...b.u16(1), ...props(version), ...b.str('m/t')])],
      ['UNSUBSCRIBE filter length beyond the packet', () => b.frame(b.TYPE.UNSUBSCRIBE, 2, [...b.u16(1), ...props(version), 0, 9, 0x61])],
      ['UNSUBSCRIBE with only one byte', () => b.frame(b.TYPE.UNSUBSCRIBE, 2, [0])],
    ]
    if (version === 5) {
      cases.push(
        ['PUBLISH without the property length', () => b.frame(b.TYPE.PUBLISH, 0, [...b.str('m/t')])],
        ['PUBLISH property length beyond the packet', () => b.frame(b.TYPE.PUBLISH, 0, [...b.str('m/t'), 9, 0x01])],
        ['PUBLISH with a truncated Message Expiry Interval', () => b.frame(b.TYPE.PUBLISH, 0, [...b.str('m/t'), 3, 0x02, 0, 0])],
        ['PUBLISH with a truncated user property', () => b.frame(b.TYPE.PUBLISH, 0, [...b.str('m/t'), 4, 0x26, 0, 5, 0x61])],
        ['SUBSCRIBE property length beyond the packet', () => b.frame(b.TYPE.SUBSCRIBE, 2, [...b.u16(1), 8, 0x0b])],
        ['DISCONNECT property length beyond the packet', () => b.frame(b.TYPE.DISCONNECT, 0, [0, 5, 0x11])],
        ['PUBACK property length beyond the packet', () => b.frame(b.TYPE.PUBACK, 0, [0, 1, 0, 6, 0x1f])],
      )
    }
    test.each(cases)('%s', async (_name, build) => {
      await expectRejected(version, build(), [MALFORMED])
    })
  })
})

describe('MQTT v5 only', () => {
  test('[MQTT-3.3.4-6] PUBLISH from a client with a Subscription Identifier is a protocol error (0x82)', async () => {
    await expectRejected(5, b.publish({ topic: 'm/sid', version: 5, properties: { subscriptionIdentifier: 3 } }), [PROTOCOL_ERROR])
  })

  test('PUBLISH with Message Expiry Interval included twice is a protocol error (0x82)', async () => {
    // Message Expiry Interval twice: 0x02 then a raw second 0x02 entry
    const bad = b.publish({ topic: 'm/dupprop', version: 5, properties: { messageExpiry: 10, raw: [0x02, 0, 0, 0, 20] } })
    await expectRejected(5, bad, [PROTOCOL_ERROR])
  })

  test('PUBLISH with Payload Format Indicator included twice is a protocol error (0x82)', async () => {
    const bad = b.publish({ topic: 'm/dupprop', payload: 'x', version: 5, properties: { payloadFormat: 1, raw: [0x01, 1] } })
    await expectRejected(5, bad, [PROTOCOL_ERROR])
  })

  test('PUBLISH with a property that is not allowed in PUBLISH (Session Expiry Interval) is rejected', async () => {
    const bad = b.publish({ topic: 'm/badprop', version: 5, properties: { sessionExpiry: 10 } })
    await expectRejected(5, bad, [MALFORMED, PROTOCOL_ERROR])
  })

  test('AUTH is a protocol error for a client that did not use enhanced authentication', async () => {
    await expectRejected(5, b.auth({ reason: 0x18 }), [PROTOCOL_ERROR])
  })
})

describe('MQTT v3.1.1 only', () => {
  test('a v3.1.1 DISCONNECT with a body is malformed and closes the connection', async () => {
    // v3.1.1 DISCONNECT has no variable header: a body makes it malformed
    await expectRejected(4, b.frame(b.TYPE.DISCONNECT, 0, [0]), [])
  })

  test('AUTH (packet type 15) is not a v3.1.1 packet and closes the connection', async () => {
    await expectRejected(4, b.frame(b.TYPE.AUTH, 0, [0x18, 0]), [])
  })
})


const FUZZ_SEED = Number(process.env.VMQTT_FUZZ_SEED ?? 0x5eed1234)

describe('fuzz', () => {
  test('200 random byte strings after a valid CONNECT never crash the broker; a control client still gets messages', async () => {
    const rnd = prng(FUZZ_SEED)
    const inputs = Array.from({ length: 200 }, (_, i) => ({ i, version: (i % 2 === 0 ? 4 : 5) as V, bytes: Buffer.alloc(0) as Buffer }))
    for (const c of inputs) c.bytes = fuzzInput(rnd, c.version)
    const errorsBefore = internalErrors.length
    const control = await bystander(5)
    try {
      for (let start = 0; start < inputs.length; start += 25) {
        await Promise.all(inputs.slice(start, start + 25).map(async (c) => {
          const { client, connack } = await RawClient.open(tb.port, { version: c.version, clientId: `fuzz-${c.i}` })
          try {
            expect(connack.cmd).toBe('connack')
            client.send(c.bytes)
          } finally {
            // FIN after the bytes: the broker handles the bytes, then sees the end of stream
            await client.close()
          }
        }))
        await control.check()
      }
      const cases = internalErrors.slice(errorsBefore)
      expect(cases, `seed 0x${FUZZ_SEED.toString(16)}: internal errors logged`).toEqual([])
    } finally {
      await control.client.close()
    }
  }, 15_000)
})

test('no internal error was logged by any malformed-packet test', () => {
  expect(internalErrors).toEqual([])
})

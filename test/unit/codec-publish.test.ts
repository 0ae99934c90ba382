import { describe, expect, test } from 'bun:test'
import { decodePublish, encodePublish, type OutPublish } from '../../src/codec/publish.ts'
import * as b from '../helpers/packet-builder.ts'
import { reasonOf } from '../helpers/mqtt-error.ts'

// Hex fixtures written by hand from MQTT 3.1.1 section 3.3 and MQTT 5 section 3.3.
const FX = {
  v4Qos0: '30 07  0003 612f62  6869',
  v4Qos1Retain: '33 08  0003 612f62  1234  78',
  v4Qos2Dup: '3c 07  0003 612f62  0001',
  v5Qos0NoProps: '30 08  0003 612f62  00  6869',
  // t, id 5, props (42 bytes): pfi 1, expiry 300, content type json, response topic r/1,
  // correlation 0a0b, user z=1, user a=2, topic alias 7; payload {}
  v5Qos1Props: '32 32  0001 74  0005  2a 0101 02 0000012c 03 0004 6a736f6e 08 0003 722f31 09 0002 0a0b' +
    ' 26 0001 7a 0001 31 26 0001 61 0001 32 23 0007  7b7d',
  // user properties interleaved with another property: z=1, pfi 0, a=2
  v5UserInterleaved: '30 14  0001 74  10 26 0001 7a 0001 31 01 00 26 0001 61 0001 32',
  utf8Topic: '30 0a  0006 c3bc2fe282ac  6869',
}

function dec(hexStr: string, v5: boolean) {
  const { header, body } = b.splitFrame(b.hex(hexStr))
  return decodePublish(header, body, v5)
}

/** decodePublish on a raw first byte and body (for bodies a builder would refuse to make). */
function codeOf(header: number, bodyHex: string, v5: boolean): number {
  return reasonOf(() => decodePublish(header, b.hex(bodyHex), v5), `${header.toString(16)} ${bodyHex}`)
}

const USER_ZA = '26 0001 7a 0001 31 26 0001 61 0001 32'

describe('fixtures agree with the independent builder', () => {
  test('v3.1.1 and v5 fixtures', () => {
    const same = (built: Buffer, fx: string) => expect(built.toString('hex')).toBe(b.hex(fx).toString('hex'))
    same(b.publish({ topic: 'a/b', payload: 'hi' }), FX.v4Qos0)
    same(b.publish({ topic: 'a/b', payload: 'x', qos: 1, retain: true, packetId: 0x1234 }), FX.v4Qos1Retain)
    same(b.publish({ topic: 'a/b', qos: 2, dup: true, packetId: 1 }), FX.v4Qos2Dup)
    same(b.publish({ topic: 'a/b', payload: 'hi', version: 5 }), FX.v5Qos0NoProps)
    same(b.publish({
      topic: 't', payload: '{}', qos: 1, packetId: 5, version: 5, properties: {
        payloadFormat: 1, messageExpiry: 300, contentType: 'json', responseTopic: 'r/1',
        correlationData: new Uint8Array([0x0a, 0x0b]), userProperties: [['z', '1'], ['a', '2']], topicAlias: 7,
      },
    }), FX.v5Qos1Props)
    same(b.publish({ topic: 'ü/€', payload: 'hi' }), FX.utf8Topic)
  })
})

describe('decodePublish', () => {
  test('v3.1.1 QoS 0', () => {
    expect(dec(FX.v4Qos0, false)).toEqual({
      topic: 'a/b', packetId: 0, qos: 0, retain: false, dup: false, payload: Buffer.from('hi'),
      props: null, expiry: -1, topicAlias: 0,
    })
  })

  test('v3.1.1 QoS 1 retain with packet id', () => {
    expect(dec(FX.v4Qos1Retain, false)).toMatchObject({ topic: 'a/b', packetId: 0x1234, qos: 1, retain: true, dup: false })
  })

  test('v3.1.1 QoS 2 DUP with empty payload', () => {
    const p = dec(FX.v4Qos2Dup, false)
    expect(p).toMatchObject({ qos: 2, dup: true, packetId: 1 })
    expect(p.payload.length).toBe(0)
  })

  test('v5 QoS 0 with empty property block', () => {
    expect(dec(FX.v5Qos0NoProps, true)).toMatchObject({ topic: 'a/b', payload: Buffer.from('hi'), props: null, expiry: -1, topicAlias: 0 })
  })

  test('v5 QoS 1 with every message property, expiry and topic alias', () => {
    const p = dec(FX.v5Qos1Props, true)
    expect(p).toMatchObject({ topic: 't', packetId: 5, qos: 1, expiry: 300, topicAlias: 7, payload: Buffer.from('{}') })
    expect(p.props).toMatchObject({ payloadFormatIndicator: 1, contentType: 'json', responseTopic: 'r/1' })
    expect(p.props!.correlationData!.toString('hex')).toBe('0a0b')
    expect(p.props!.userProps!.toString('hex')).toBe(b.hex(USER_ZA).toString('hex'))
  })

  test('[MQTT-3.3.2-18] user properties keep their order, also when interleaved', () => {
    const p = dec(FX.v5UserInterleaved, true)
    expect(p.props!.payloadFormatIndicator).toBe(0)
    expect(p.props!.userProps!.toString('hex')).toBe(b.hex(USER_ZA).toString('hex'))
    expect(p.payload.length).toBe(0)
  })

  test('v3.1.1 never reads a property block', () => {
    // on a v3.1.1 connection the 00 after the topic is payload
    expect(dec(FX.v5Qos0NoProps, false).payload.toString('hex')).toBe('006869')
  })

  test('multi-byte UTF-8 topic', () => expect(dec(FX.utf8Topic, false).topic).toBe('ü/€'))

  test('payload, correlation data and user properties do not alias the input buffer', () => {
    const { header, body } = b.splitFrame(b.hex(FX.v5Qos1Props))
    const p = decodePublish(header, body, true)
    body.fill(0)
    expect(p.payload.toString()).toBe('{}')
    expect(p.props!.correlationData!.toString('hex')).toBe('0a0b')
    expect(p.props!.userProps!.toString('hex')).toBe(b.hex(USER_ZA).toString('hex'))
  })
})

describe('decodePublish malformed', () => {
  test('[MQTT-3.3.1-4] QoS bits 11 → 0x81', () => expect(codeOf(0x36, '0001 61 0001', false)).toBe(0x81))
  test('[MQTT-3.3.1-2] DUP on QoS 0 → 0x81', () => expect(codeOf(0x38, '0001 61', false)).toBe(0x81))
  test('[MQTT-2.2.1-3] QoS 1 with packet id 0 → 0x81', () => expect(codeOf(0x32, '0001 61 0000', false)).toBe(0x81))
  test('[MQTT-2.2.1-3] QoS 2 with packet id 0 → 0x81', () => expect(codeOf(0x34, '0001 61 0000 78', true)).toBe(0x81))

  test('truncated packets → 0x81', () => {
    expect(codeOf(0x30, '00', false)).toBe(0x81)
    expect(codeOf(0x30, '0005 6162', false)).toBe(0x81)
    expect(codeOf(0x32, '0001 61 00', false)).toBe(0x81)
    expect(codeOf(0x30, '0001 61', true)).toBe(0x81)
    expect(codeOf(0x30, '0001 61 05 0101', true)).toBe(0x81)
    expect(codeOf(0x30, '0001 61 02 02 00', true)).toBe(0x81)
    expect(codeOf(0x30, '0001 61 04 26 0001 7a', true)).toBe(0x81)
    expect(codeOf(0x30, '0001 61 ffffffff7f', true)).toBe(0x81)
  })

  for (const [what, topic] of [['invalid byte ff', '61ff62'], ['overlong c0af', '61c0af'], ['surrogate eda080', 'eda080'], ['lone continuation 80', '6180']]) {
    test(`[MQTT-1.5.4-1] topic with ${what} → 0x81`, () => {
      expect(codeOf(0x30, `${(topic.length / 2).toString(16).padStart(4, '0')} ${topic}`, false)).toBe(0x81)
    })
  }

  test('[MQTT-1.5.4-2] topic with U+0000 → 0x81', () => {
    expect(codeOf(0x30, '0003 610062', false)).toBe(0x81)
    expect(codeOf(0x30, '0003 c3a900', true)).toBe(0x81)
  })

  test('[MQTT-1.5.4-1] invalid UTF-8 in a user property → 0x81', () => {
    expect(codeOf(0x30, '0001 61 07 26 0001 ff 0001 31', true)).toBe(0x81)
  })

  test('[MQTT-3.3.4-6] subscription identifier from a client → 0x82', () => {
    expect(codeOf(0x30, '0001 61 02 0b 01', true)).toBe(0x82)
  })

  test('duplicate message expiry → 0x82', () => {
    expect(codeOf(0x30, '0001 61 0a 02 00000001 02 00000002', true)).toBe(0x82)
  })

  test('duplicate topic alias → 0x82', () => expect(codeOf(0x30, '0001 61 06 23 0001 23 0002', true)).toBe(0x82))

  test('unknown property 0x7f → 0x81', () => expect(codeOf(0x30, '0001 61 02 7f 00', true)).toBe(0x81))

  test('a property not allowed in PUBLISH (session expiry 0x11) → 0x81', () => {
    expect(codeOf(0x30, '0001 61 05 11 00000001', true)).toBe(0x81)
  })

  test('[MQTT-3.3.2-14] response topic with a wildcard → 0x82', () => {
    expect(codeOf(0x30, '0001 61 06 08 0003 612f23', true)).toBe(0x82)
  })

  // Known bug: a Topic Alias of 0 decodes as topicAlias 0, the same as "no alias", so the broker
  // cannot detect it. Spec 3.3.2.3.4: a Topic Alias of 0 is a Protocol Error (DISCONNECT 0x94).
  test('[MQTT-3.3.2-8] topic alias 0 is rejected', () => {
    expect(codeOf(0x30, '0001 61 03 23 0000', true)).toBeGreaterThanOrEqual(0x80)
  })
})

const out = (o: Partial<OutPublish>): OutPublish => ({
  topic: 'a/b', payload: Buffer.alloc(0), qos: 0, retain: false, dup: false, packetId: 0,
  props: null, expiry: -1, topicAlias: 0, subIds: null, ...o,
})
const encHex = (o: Partial<OutPublish>, v5: boolean) => encodePublish(out(o), v5).toString('hex')
const hx = (s: string) => b.hex(s).toString('hex')

const ALL_PROPS = {
  payloadFormatIndicator: 1, contentType: 'json', responseTopic: 'r/1',
  correlationData: Buffer.from([0x0a, 0x0b]), userProps: b.hex(USER_ZA),
}

describe('encodePublish', () => {
  test('v3.1.1 QoS 0, QoS 1 retain, QoS 2 DUP', () => {
    expect(encHex({ payload: Buffer.from('hi') }, false)).toBe(hx(FX.v4Qos0))
    expect(encHex({ payload: Buffer.from('x'), qos: 1, retain: true, packetId: 0x1234 }, false)).toBe(hx(FX.v4Qos1Retain))
    expect(encHex({ qos: 2, dup: true, packetId: 1 }, false)).toBe(hx(FX.v4Qos2Dup))
  })

  test('v5 QoS 0 writes an empty property block', () => {
    expect(encHex({ payload: Buffer.from('hi') }, true)).toBe(hx(FX.v5Qos0NoProps))
  })

  test('v5 with every property and two subscription identifiers (user properties in order)', () => {
    // property order is the encoder's (any order is valid); user properties keep theirs [MQTT-3.3.2-18]
    const want = '32 37  0001 74  0005  2f 01 01 03 0004 6a736f6e 08 0003 722f31 09 0002 0a0b 02 0000012c' +
      ` 23 0007 0b 01 0b c801 ${USER_ZA}  7b7d`
    expect(encHex({
      topic: 't', payload: Buffer.from('{}'), qos: 1, packetId: 5, props: ALL_PROPS, expiry: 300, topicAlias: 7, subIds: [1, 200],
    }, true)).toBe(hx(want))
  })

  test('v5 topic alias with an empty topic name', () => {
    expect(encHex({ topic: '', topicAlias: 3, payload: Buffer.from('hi') }, true)).toBe(hx('30 08  0000  03 23 0003  6869'))
  })

  test('v5 message expiry 0 is written, -1 is omitted', () => {
    expect(encHex({ expiry: 0 }, true)).toBe(hx('30 0b  0003 612f62  05 02 00000000'))
    expect(encHex({ expiry: -1 }, true)).toBe(hx('30 06  0003 612f62  00'))
  })

  test('v3.1.1 output drops every v5 property', () => {
    expect(encHex({
      payload: Buffer.from('hi'), props: ALL_PROPS, expiry: 300, topicAlias: 7, subIds: [1],
    }, false)).toBe(hx(FX.v4Qos0))
  })

  test('multi-byte UTF-8 topic length counts bytes', () => {
    expect(encHex({ topic: 'ü/€', payload: Buffer.from('hi') }, false)).toBe(hx(FX.utf8Topic))
  })

  test('a 200-byte payload uses a two-byte remaining length', () => {
    const want = `30 cb01  0001 61  ${'78'.repeat(200)}`
    expect(encHex({ topic: 'a', payload: Buffer.alloc(200, 'x') }, false)).toBe(hx(want))
  })

  test('decode of the encoder output gives the message back (v5)', () => {
    const o = out({ topic: 'x/y', payload: Buffer.from('p'), qos: 2, packetId: 9, props: ALL_PROPS, expiry: 5 })
    const { header, body } = b.splitFrame(encodePublish(o, true))
    expect(decodePublish(header, body, true)).toMatchObject({ topic: 'x/y', qos: 2, packetId: 9, expiry: 5, props: ALL_PROPS })
  })
})

import { describe, expect, test } from 'bun:test'
import type { IConnectPacket, ISubscribePacket, Packet } from 'mqtt-packet'
import fixtures from '../fixtures/packets.json'
import { decodePacket, encodePacket, FrameList, peekConnect, type ProtocolVersion } from '../../src/codec/packets.ts'
import { MqttError } from '../../src/codec/reason-codes.ts'
import * as b from '../helpers/packet-builder.ts'
import { reasonOf } from '../helpers/mqtt-error.ts'

interface Fixture { name: string; version: ProtocolVersion; hex: string }

function fx(name: string): { version: ProtocolVersion; bytes: Buffer; header: number; body: Buffer } {
  const f = (fixtures as Fixture[]).find((x) => x.name === name)
  if (f === undefined) throw new Error(`no fixture named ${name}`)
  const bytes = b.hex(f.hex)
  return { version: f.version, bytes, ...b.splitFrame(bytes) }
}

const decodeFx = (name: string): Packet => {
  const f = fx(name)
  return decodePacket(f.header, f.body, f.version)
}

const errorCode = (fn: () => unknown): number => reasonOf(fn)

describe('fixtures agree with the independent builder', () => {
  const cases: [string, Buffer][] = [
    ['connect-v3-mqisdp', b.connect({ version: 3, clientId: 'c1', keepalive: 60 })],
    ['connect-v4-minimal', b.connect({ version: 4, keepalive: 0 })],
    ['connect-v4-full', b.connect({
      version: 4, clientId: 'client-1', keepalive: 30, username: 'user', password: 'pass',
      will: { topic: 'w/t', payload: 'bye', qos: 1, retain: true },
    })],
    ['connect-v5-full', b.connect({
      version: 5, clientId: 'v5', keepalive: 10, username: 'u', password: new Uint8Array([0x00, 0xff]),
      properties: {
        sessionExpiry: 3600, receiveMaximum: 20, maximumPacketSize: 65536, topicAliasMaximum: 10,
        requestProblemInfo: 0, requestResponseInfo: 1, userProperties: [['a', 'b'], ['a', 'c']],
        authMethod: 'SCRAM', authData: new Uint8Array([1, 2]),
      },
      will: {
        topic: 'lwt', payload: 'gone',
        properties: {
          willDelay: 30, payloadFormat: 1, messageExpiry: 60, contentType: 'text/plain',
          responseTopic: 'reply', correlationData: new Uint8Array([0xab, 0xcd]), userProperties: [['k', 'v']],
        },
      },
    })],
    ['subscribe-v4', b.subscribe(10, [{ topic: 'a/b', qos: 1 }, { topic: 'c/#', qos: 2 }])],
    ['subscribe-v5', b.subscribe(1, [
      { topic: 't/+', qos: 1, nl: true, rap: true, rh: 2 }, { topic: '$share/g/s', qos: 0, rh: 1 },
    ], { version: 5, properties: { subscriptionIdentifier: 129, userProperties: [['x', 'y']] } })],
    ['unsubscribe-v4', b.unsubscribe(2, ['a/b', 'c/#'])],
    ['unsubscribe-v5', b.unsubscribe(3, ['x'], { version: 5 })],
    ['pingreq', b.pingreq()],
    ['disconnect-v4', b.disconnect()],
    ['disconnect-v5-will-expiry', b.disconnect({ version: 5, reason: 0x04, properties: { sessionExpiry: 0 } })],
    ['auth-v5-continue', b.auth({ reason: 0x18, properties: { authMethod: 'SCRAM', authData: new Uint8Array([1, 2, 3]) } })],
    ['connack-v4-session-present', b.connack({ sessionPresent: true })],
    ['connack-v5-props', b.connack({
      version: 5, properties: {
        receiveMaximum: 1024, maximumPacketSize: 16777216, topicAliasMaximum: 64,
        assignedClientId: 'auto-1', retainAvailable: 1, serverKeepAlive: 60,
      },
    })],
    ['suback-v5', b.suback(1, [0x01, 0x8f], { version: 5, properties: { reasonString: 'bad' } })],
    ['unsuback-v5', b.unsuback(3, { version: 5, codes: [0x00, 0x11] })],
    ['disconnect-v5-admin-reason-string', b.disconnect({ version: 5, reason: 0x98, properties: { reasonString: 'bye' } })],
  ]
  for (const [name, built] of cases) {
    test(name, () => expect(built.toString('hex')).toBe(fx(name).bytes.toString('hex')))
  }
})

describe('decodePacket CONNECT', () => {
  test('MQTT 3.1 (MQIsdp, level 3)', () => {
    const p = decodeFx('connect-v3-mqisdp') as IConnectPacket
    expect(p).toMatchObject({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'c1', clean: true, keepalive: 60 })
    expect(p.will).toBeUndefined()
    expect(p.username).toBeUndefined()
  })

  test('MQTT 3.1.1 with will, username and password', () => {
    const p = decodeFx('connect-v4-full') as IConnectPacket
    expect(p).toMatchObject({ protocolId: 'MQTT', protocolVersion: 4, clientId: 'client-1', clean: true, keepalive: 30, username: 'user' })
    expect(Buffer.from(p.password!).toString()).toBe('pass')
    expect(p.will).toMatchObject({ topic: 'w/t', qos: 1, retain: true })
    expect(Buffer.from(p.will!.payload).toString()).toBe('bye')
  })

  test('MQTT 3.1.1 empty client id, keepalive 0', () => {
    expect(decodeFx('connect-v4-minimal')).toMatchObject({ protocolVersion: 4, clientId: '', keepalive: 0, clean: true })
  })

  test('MQTT 5 with CONNECT and will properties', () => {
    const p = decodeFx('connect-v5-full') as IConnectPacket
    expect(p).toMatchObject({ protocolVersion: 5, clientId: 'v5', keepalive: 10, username: 'u' })
    expect([...p.password!]).toEqual([0x00, 0xff])
    expect(p.properties).toMatchObject({
      sessionExpiryInterval: 3600, receiveMaximum: 20, maximumPacketSize: 65536, topicAliasMaximum: 10,
      requestProblemInformation: false, requestResponseInformation: true,
      userProperties: { a: ['b', 'c'] }, authenticationMethod: 'SCRAM',
    })
    expect([...p.properties!.authenticationData!]).toEqual([1, 2])
    expect(p.will).toMatchObject({ topic: 'lwt', qos: 0, retain: false })
    expect(Buffer.from(p.will!.payload).toString()).toBe('gone')
    expect(p.will!.properties).toMatchObject({
      willDelayInterval: 30, payloadFormatIndicator: true, messageExpiryInterval: 60,
      contentType: 'text/plain', responseTopic: 'reply', userProperties: { k: 'v' },
    })
    expect([...p.will!.properties!.correlationData!]).toEqual([0xab, 0xcd])
  })

  test('[MQTT-3.1.2-3] reserved flag set is malformed (0x81)', () => {
    const f = fx('connect-v4-reserved-flag')
    expect(errorCode(() => decodePacket(f.header, f.body, 4))).toBe(0x81)
  })

  test('[MQTT-1.5.4-1] ill-formed UTF-8 in the client id is malformed (0x81)', () => {
    const f = fx('connect-v4-clientid-invalid-utf8')
    expect(errorCode(() => decodePacket(f.header, f.body, 4))).toBe(0x81)
  })

  test('[MQTT-1.5.4-2] U+0000 in the will topic is malformed (0x81)', () => {
    const f = fx('connect-v4-will-topic-nul')
    expect(errorCode(() => decodePacket(f.header, f.body, 4))).toBe(0x81)
  })
})

describe('decodePacket SUBSCRIBE / UNSUBSCRIBE', () => {
  test('SUBSCRIBE v3.1.1', () => {
    const p = decodeFx('subscribe-v4') as ISubscribePacket
    expect(p.messageId).toBe(10)
    expect(p.subscriptions).toEqual([{ topic: 'a/b', qos: 1 }, { topic: 'c/#', qos: 2 }])
  })

  test('SUBSCRIBE v5 with options and subscription identifier', () => {
    const p = decodeFx('subscribe-v5') as ISubscribePacket
    expect(p.messageId).toBe(1)
    expect(p.properties).toMatchObject({ subscriptionIdentifier: 129, userProperties: { x: 'y' } })
    expect(p.subscriptions).toEqual([
      { topic: 't/+', qos: 1, nl: true, rap: true, rh: 2 },
      { topic: '$share/g/s', qos: 0, nl: false, rap: false, rh: 1 },
    ])
  })

  for (const name of ['subscribe-v4-filter-invalid-utf8', 'subscribe-v4-filter-overlong', 'subscribe-v4-filter-surrogate']) {
    test(`[MQTT-1.5.4-1] ${name} is malformed (0x81)`, () => {
      const f = fx(name)
      expect(errorCode(() => decodePacket(f.header, f.body, 4))).toBe(0x81)
    })
  }

  test('[MQTT-1.5.4-2] U+0000 in a topic filter is malformed (0x81)', () => {
    const f = fx('subscribe-v4-filter-nul')
    expect(errorCode(() => decodePacket(f.header, f.body, 4))).toBe(0x81)
  })

  // Known bug: checkStrings skips the U+FFFD check when the body contains EF BF BD anywhere.
  test('[MQTT-1.5.4-1] invalid UTF-8 is caught even when another filter holds a real U+FFFD', () => {
    const f = fx('subscribe-v4-replacement-char-then-invalid')
    expect(errorCode(() => decodePacket(f.header, f.body, 4))).toBe(0x81)
  })

  test('a legitimate U+FFFD in a filter is accepted', () => {
    const bytes = b.subscribe(5, [{ topic: 'a/\ufffd', qos: 0 }])
    const { header, body } = b.splitFrame(bytes)
    expect((decodePacket(header, body, 4) as ISubscribePacket).subscriptions[0]!.topic).toBe('a/\ufffd')
  })

  test('[MQTT-3.8.3-4] requested QoS 3 is malformed (0x81)', () => {
    const f = fx('subscribe-v4-qos3')
    expect(errorCode(() => decodePacket(f.header, f.body, 4))).toBe(0x81)
  })

  test('[MQTT-3.8.1-1] SUBSCRIBE with reserved flags 0000 is malformed (0x81)', () => {
    const { body } = fx('subscribe-v4')
    expect(errorCode(() => decodePacket(0x80, body, 4))).toBe(0x81)
  })

  test('UNSUBSCRIBE v3.1.1 and v5', () => {
    expect(decodeFx('unsubscribe-v4')).toMatchObject({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['a/b', 'c/#'] })
    expect(decodeFx('unsubscribe-v5')).toMatchObject({ cmd: 'unsubscribe', messageId: 3, unsubscriptions: ['x'] })
  })
})

describe('decodePacket PINGREQ / DISCONNECT / AUTH', () => {
  test('PINGREQ', () => expect(decodeFx('pingreq').cmd).toBe('pingreq'))

  test('DISCONNECT v3.1.1', () => expect(decodeFx('disconnect-v4').cmd).toBe('disconnect'))

  test('DISCONNECT v5 without a body means Normal disconnection', () => {
    expect(decodeFx('disconnect-v5-empty')).toMatchObject({ cmd: 'disconnect', reasonCode: 0 })
  })

  test('DISCONNECT v5 with will reason and session expiry 0', () => {
    expect(decodeFx('disconnect-v5-will-expiry')).toMatchObject({
      cmd: 'disconnect', reasonCode: 0x04, properties: { sessionExpiryInterval: 0 },
    })
  })

  test('AUTH v5', () => {
    const p = decodeFx('auth-v5-continue')
    expect(p).toMatchObject({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM' } })
    expect([...(p as { properties: { authenticationData: Buffer } }).properties.authenticationData]).toEqual([1, 2, 3])
  })

  test('a truncated body is malformed (0x81)', () => {
    const { header, body } = fx('subscribe-v4')
    expect(errorCode(() => decodePacket(header, body.subarray(0, 5), 4))).toBe(0x81)
  })

  test('every truncation of every client packet fixture decodes or is refused with a reason code', () => {
    const names = (fixtures as Fixture[]).map((f) => f.name).filter((n) => /^(connect|subscribe|unsubscribe|disconnect|auth)-/.test(n))
    expect(names.length).toBeGreaterThan(15)
    let refused = 0
    for (const name of names) {
      const { header, body, version } = fx(name)
      for (let cut = 0; cut < body.length; cut++) {
        try {
          decodePacket(header, body.subarray(0, cut), version)
        } catch (e) {
          if (!(e instanceof MqttError)) throw new Error(`${name} cut at ${cut}: ${String(e)}`)
          refused++
        }
      }
    }
    expect(refused).toBeGreaterThan(100)
  })
})

describe('encodePacket', () => {
  const enc = (p: unknown, v: ProtocolVersion) => encodePacket(p as Packet, v).toString('hex')
  const hexOf = (name: string) => fx(name).bytes.toString('hex')

  test('CONNACK v3.1.1', () => {
    expect(enc({ cmd: 'connack', sessionPresent: true, returnCode: 0 }, 4)).toBe(hexOf('connack-v4-session-present'))
    expect(enc({ cmd: 'connack', sessionPresent: false, returnCode: 5 }, 4)).toBe(hexOf('connack-v4-not-authorized'))
  })

  test('CONNACK v5 with properties', () => {
    expect(enc({
      cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: {
        receiveMaximum: 1024, maximumPacketSize: 16777216, topicAliasMaximum: 64,
        assignedClientIdentifier: 'auto-1', retainAvailable: true, serverKeepAlive: 60,
      },
    }, 5)).toBe(hexOf('connack-v5-props'))
  })

  test('SUBACK v3.1.1 and v5', () => {
    expect(enc({ cmd: 'suback', messageId: 10, granted: [1, 2, 0x80] }, 4)).toBe(hexOf('suback-v4'))
    expect(enc({ cmd: 'suback', messageId: 1, granted: [1, 0x8f], properties: { reasonString: 'bad' } }, 5)).toBe(hexOf('suback-v5'))
  })

  test('CONNACK and SUBACK without properties agree with the independent builder', () => {
    for (const version of [3, 4] as const) {
      for (const sessionPresent of [false, true]) {
        for (const code of [0, 1, 5]) {
          expect(enc({ cmd: 'connack', sessionPresent, returnCode: code }, version)).toBe(b.connack({ sessionPresent, code }).toString('hex'))
        }
      }
      // 200 filters: the remaining length takes two bytes
      for (const codes of [[0], [2, 0x80, 1], Array.from({ length: 200 }, (_, i) => i % 3)]) {
        expect(enc({ cmd: 'suback', messageId: 0xabcd, granted: codes }, version)).toBe(b.suback(0xabcd, codes).toString('hex'))
      }
    }
    expect(() => enc({ cmd: 'suback', messageId: 1, granted: [] }, 4)).toThrow('Invalid qos vector')
    // v5 without properties: an empty property list
    for (const codes of [[0], [2, 0x80, 0x97], Array.from({ length: 200 }, (_, i) => i % 3)]) {
      expect(enc({ cmd: 'suback', messageId: 7, granted: codes }, 5)).toBe(b.suback(7, codes, { version: 5 }).toString('hex'))
      expect(enc({ cmd: 'suback', messageId: 7, granted: codes, properties: {} }, 5)).toBe(b.suback(7, codes, { version: 5 }).toString('hex'))
    }
    expect(() => enc({ cmd: 'connack', sessionPresent: false }, 4)).toThrow('Invalid return code')
  })

  test('UNSUBACK v3.1.1 and v5', () => {
    expect(enc({ cmd: 'unsuback', messageId: 2 }, 4)).toBe(hexOf('unsuback-v4'))
    expect(enc({ cmd: 'unsuback', messageId: 3, granted: [0x00, 0x11] }, 5)).toBe(hexOf('unsuback-v5'))
  })

  test('PINGRESP', () => expect(enc({ cmd: 'pingresp' }, 4)).toBe(hexOf('pingresp')))

  test('DISCONNECT v5', () => {
    expect(enc({ cmd: 'disconnect', reasonCode: 0x8e }, 5)).toBe(hexOf('disconnect-v5-taken-over'))
    expect(enc({ cmd: 'disconnect', reasonCode: 0x98, properties: { reasonString: 'bye' } }, 5)).toBe(hexOf('disconnect-v5-admin-reason-string'))
  })

  test('AUTH v5', () => {
    expect(enc({
      cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM', authenticationData: Buffer.from([1, 2, 3]) },
    }, 5)).toBe(hexOf('auth-v5-continue'))
  })
})

describe('peekConnect', () => {
  test('reads protocol name and level of each version', () => {
    expect(peekConnect(fx('connect-v3-mqisdp').body)).toEqual({ protocolName: 'MQIsdp', level: 3 })
    expect(peekConnect(fx('connect-v4-full').body)).toEqual({ protocolName: 'MQTT', level: 4 })
    expect(peekConnect(fx('connect-v5-full').body)).toEqual({ protocolName: 'MQTT', level: 5 })
  })

  test('[MQTT-3.1.2-2] reports an unsupported level so the server can answer 0x84', () => {
    expect(peekConnect(fx('connect-mqtt-level-6').body)).toEqual({ protocolName: 'MQTT', level: 6 })
    const f = fx('connect-mqtt-level-6')
    expect(errorCode(() => decodePacket(f.header, f.body, 5))).toBe(0x81)
  })

  test('reports a foreign protocol name', () => {
    const { body } = b.splitFrame(b.connect({ protocolName: 'HTTP', protocolLevel: 4 }))
    expect(peekConnect(body)).toEqual({ protocolName: 'HTTP', level: 4 })
  })

  test('returns null when the body is too short', () => {
    expect(peekConnect(Buffer.from([0x00]))).toBeNull()
    expect(peekConnect(Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54]))).toBeNull()
  })
})

describe('FrameList (what mqtt-packet reads a frame through)', () => {
  const frame = () => Buffer.from([0x10, 0x02, 0xab, 0xcd, 0x00, 0x01, 0x02, 0x03])

  test('reads bytes and ranges in place, relative to what was consumed', () => {
    const buf = frame()
    const l = new FrameList()
    l.append(buf)
    expect(l.length).toBe(8)
    expect(l.readUInt8(0)).toBe(0x10)
    l.consume(2)
    expect(l.length).toBe(6)
    expect(l.readUInt16BE(0)).toBe(0xabcd)
    expect(l.readUInt32BE(2)).toBe(0x00010203)
    expect(l.toString('hex', 1, 3)).toBe('cd00')
    const view = l.slice(0, 2)
    expect([...view]).toEqual([0xab, 0xcd])
    buf[2] = 0xee
    expect(view[0]).toBe(0xee)
  })

  test('ranges are clamped to the frame, reads past it throw RangeError', () => {
    const l = new FrameList()
    l.append(frame())
    l.consume(6)
    expect([...l.slice(0, 100)]).toEqual([0x02, 0x03])
    expect(l.slice(5, 3).length).toBe(0)
    expect(() => l.readUInt8(2)).toThrow(RangeError)
    expect(() => l.readUInt16BE(1)).toThrow(RangeError)
    l.consume(100)
    expect(l.length).toBe(0)
  })

  test('holds one frame at a time', () => {
    const l = new FrameList()
    l.append(frame())
    expect(() => l.append(frame())).toThrow('one frame')
  })
})

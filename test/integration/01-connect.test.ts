/**
 * CONNECT / CONNACK, keepalive, session takeover, connection limits and enhanced
 * authentication, checked over real sockets against an in-process broker.
 */
import { describe, expect, test } from 'bun:test'
import mqtt from 'mqtt'
import type { IAuthPacket, IConnackPacket, IDisconnectPacket } from 'mqtt-packet'
import type { AuthContext, EnhancedAuth } from '../../src/broker/auth-hooks.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const VERSIONS = [4, 5] as const

/** Waits for the server to close; whatever it sent before is returned, decoded. */
async function drainUntilClosed(c: RawClient, ms = 3000): Promise<string[]> {
  await c.closed(ms)
  const seen: string[] = []
  for (;;) {
    try {
      seen.push((await c.next(1)).cmd)
    } catch {
      return seen
    }
  }
}

describe('CONNACK for every supported protocol level', () => {
  test('[MQTT-3.2.0-1] MQTT 3.1 (MQIsdp, level 3) CONNECT gets CONNACK 0x00', async () => {
    await using br = await startBroker()
    await using c = await RawClient.connect(br.port)
    c.send(b.connect({ version: 3, clientId: 'v31-client' }))
    expect(await c.nextRaw()).toEqual(b.connack({ code: 0 }))
  })

  test('[MQTT-3.2.0-1] MQTT 3.1.1 CONNECT gets CONNACK 0x00', async () => {
    await using br = await startBroker()
    await using c = await RawClient.connect(br.port)
    c.send(b.connect({ version: 4, clientId: 'v311-client' }))
    expect(await c.nextRaw()).toEqual(b.connack({ code: 0 }))
  })

  test('[MQTT-3.2.0-1] MQTT 5 CONNECT gets CONNACK reason 0x00', async () => {
    await using br = await startBroker()
    const { client, connack } = await RawClient.open(br.port, { version: 5, clientId: 'v5-client' })
    await using _c = client
    const ack = connack as IConnackPacket
    expect(ack.reasonCode).toBe(0)
    expect(ack.sessionPresent).toBe(false)
  })

  for (const protocolVersion of [3, 4, 5] as const) {
    test(`[MQTT-3.2.0-1] MQTT.js with protocol version ${protocolVersion} gets a successful CONNACK`, async () => {
      await using br = await startBroker()
      const client = await mqtt.connectAsync(br.url, {
        protocolVersion, protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
        clientId: `mqttjs-v${protocolVersion}`, reconnectPeriod: 0,
      })
      try {
        expect(client.connected).toBe(true)
        expect(br.broker.isOnline(`mqttjs-v${protocolVersion}`)).toBe(true)
      } finally {
        await client.endAsync()
      }
    })
  }
})

describe('protocol name and level', () => {
  test('[MQTT-3.1.2-2] protocol level 6 gets CONNACK return code 0x01 and the connection is closed', async () => {
    await using br = await startBroker()
    await using c = await RawClient.connect(br.port)
    c.send(b.connect({ version: 4, protocolLevel: 6, clientId: 'level6' }))
    expect(await c.nextRaw()).toEqual(b.connack({ code: 0x01 }))
    await c.closed()
  })

  test('[MQTT-3.1.2-2] protocol name MQTT with level 3 gets CONNACK return code 0x01 and the connection is closed', async () => {
    await using br = await startBroker()
    await using c = await RawClient.connect(br.port)
    c.send(b.connect({ version: 4, protocolName: 'MQTT', protocolLevel: 3, clientId: 'mqtt-level3' }))
    expect(await c.nextRaw()).toEqual(b.connack({ code: 0x01 }))
    await c.closed()
  })

  test('[MQTT-3.1.2-1] a wrong protocol name closes the connection without CONNACK', async () => {
    await using br = await startBroker()
    await using c = await RawClient.connect(br.port)
    c.send(b.connect({ version: 4, protocolName: 'MQTX', clientId: 'bad-name' }))
    expect(await drainUntilClosed(c)).toEqual([])
  })

  for (const version of VERSIONS) {
    test(`[MQTT-3.1.2-3] v${version}: reserved connect flag bit 0 set closes the connection without accepting it`, async () => {
      await using br = await startBroker()
      await using c = await RawClient.connect(br.port)
      c.send(b.connect({ version, clientId: 'reserved', flags: 0x03 }))
      await c.closed()
      const first = await c.next(1).catch(() => null)
      if (version === 4) expect(first).toBeNull()
      else if (first !== null) {
        // v5 may answer a malformed CONNECT with CONNACK 0x81 before closing [MQTT-4.13.1-1]
        expect(first.cmd).toBe('connack')
        expect((first as IConnackPacket).reasonCode).toBe(0x81)
      }
    })
  }
})

describe('packet order', () => {
  for (const version of VERSIONS) {
    test(`[MQTT-3.1.0-1] v${version}: a first packet other than CONNECT closes the connection`, async () => {
      await using br = await startBroker()
      await using c = await RawClient.connect(br.port, { version })
      c.send(b.pingreq())
      expect(await drainUntilClosed(c)).toEqual([])
    })

    test(`[MQTT-3.1.0-2] v${version}: a second CONNECT closes the connection`, async () => {
      await using br = await startBroker()
      const { client: c } = await RawClient.open(br.port, { version, clientId: 'twice' })
      await using _c = c
      c.send(b.connect({ version, clientId: 'twice' }))
      await c.closed()
      if (version === 5) {
        // v5: the server says why with DISCONNECT 0x82 (Protocol Error) first [MQTT-4.13.1-1]
        const d = (await c.next(1)) as IDisconnectPacket
        expect([d.cmd, d.reasonCode]).toEqual(['disconnect', 0x82])
      }
      expect(await drainUntilClosed(c)).toEqual([])
    })

    test(`[MQTT-3.12.4-1] v${version}: PINGREQ is answered with PINGRESP`, async () => {
      await using br = await startBroker()
      const { client: c } = await RawClient.open(br.port, { version, clientId: 'pinger' })
      await using _c = c
      c.send(b.pingreq())
      expect(await c.nextRaw()).toEqual(b.pingresp())
    })
  }
})

describe('client identifier', () => {
  test('[MQTT-3.1.3-8] v3.1.1: empty client id with clean session 0 gets CONNACK 0x02 and is closed', async () => {
    await using br = await startBroker()
    await using c = await RawClient.connect(br.port)
    c.send(b.connect({ version: 4, clientId: '', clean: false }))
    expect(await c.nextRaw()).toEqual(b.connack({ code: 0x02 }))
    await c.closed()
  })

  test('[MQTT-3.1.3-6] v3.1.1: empty client id with clean session 1 is accepted', async () => {
    await using br = await startBroker()
    await using c = await RawClient.connect(br.port)
    c.send(b.connect({ version: 4, clientId: '', clean: true }))
    expect(await c.nextRaw()).toEqual(b.connack({ code: 0 }))
    c.send(b.pingreq())
    expect(await c.nextRaw()).toEqual(b.pingresp())
  })

  test('[MQTT-3.2.2-16] v5: empty client id gets an Assigned Client Identifier', async () => {
    await using br = await startBroker()
    const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: '' })
    await using _c = c
    const ack = connack as IConnackPacket
    expect(ack.reasonCode).toBe(0)
    const assigned = ack.properties?.assignedClientIdentifier
    expect(typeof assigned).toBe('string')
    expect((assigned as string).length).toBeGreaterThan(0)
    // a second client with an empty id gets a different identifier
    const { client: c2, connack: ack2 } = await RawClient.open(br.port, { version: 5, clientId: '' })
    await using _c2 = c2
    expect((ack2 as IConnackPacket).properties?.assignedClientIdentifier).not.toBe(assigned)
    // and the first connection was not taken over
    c.send(b.pingreq())
    expect(await c.nextRaw()).toEqual(b.pingresp())
  })

  test('[MQTT-3.2.2-16] v5: a client that sent its own id gets no Assigned Client Identifier', async () => {
    await using br = await startBroker()
    const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: 'mine' })
    await using _c = c
    expect((connack as IConnackPacket).properties?.assignedClientIdentifier).toBeUndefined()
  })
})

describe('v5 CONNACK capabilities', () => {
  test('[MQTT-3.2.2-9] CONNACK announces receive maximum, packet size, alias maximum and feature availability; no Maximum QoS at 2', async () => {
    await using br = await startBroker({
      VMQTT_LIMITS_RECEIVE_MAXIMUM: '77', VMQTT_LIMITS_MAX_PACKET_SIZE: '65536', VMQTT_LIMITS_TOPIC_ALIAS_MAXIMUM: '9',
    })
    const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: 'caps' })
    await using _c = c
    const p = (connack as IConnackPacket).properties ?? {}
    expect(p.receiveMaximum).toBe(77)
    expect(p.maximumPacketSize).toBe(65536)
    expect(p.topicAliasMaximum).toBe(9)
    expect(p.retainAvailable).toBe(true)
    expect(p.wildcardSubscriptionAvailable).toBe(true)
    expect(p.subscriptionIdentifiersAvailable).toBe(true)
    expect(p.sharedSubscriptionAvailable).toBe(true)
    expect(p.maximumQoS).toBeUndefined()
    expect(p.serverKeepAlive).toBeUndefined()
  })

  test('[MQTT-3.2.2-2] each client gets its own session present, assigned identifier and session expiry on one broker', async () => {
    await using br = await startBroker()
    const open = async (clientId: string, clean: boolean, sessionExpiry?: number) => {
      const { client, connack } = await RawClient.open(br.port, { version: 5, clientId, clean, properties: sessionExpiry === undefined ? undefined : { sessionExpiry } })
      return { client, ack: connack as IConnackPacket }
    }
    const first = await open('keeps', true, 60)
    expect(first.ack.sessionPresent).toBe(false)
    first.client.send(b.disconnect({ version: 5 }))
    await first.client.closed()
    const plain = await open('plain', true)
    await using _p = plain.client
    expect(plain.ack.sessionPresent).toBe(false)
    const resumed = await open('keeps', false, 60)
    await using _r = resumed.client
    expect(resumed.ack.sessionPresent).toBe(true)
    expect(resumed.ack.properties?.sessionExpiryInterval).toBeUndefined()
    const assigned = await open('', true)
    await using _a = assigned.client
    expect(assigned.ack.properties?.assignedClientIdentifier).toMatch(/.+/)
    const again = await open('again', true)
    await using _g = again.client
    expect(again.ack.sessionPresent).toBe(false)
    expect(again.ack.properties?.assignedClientIdentifier).toBeUndefined()
    // the limits part is the same for every client
    expect(again.ack.properties).toEqual(plain.ack.properties!)
    expect(resumed.ack.properties).toEqual(plain.ack.properties!)
  })

  test('[MQTT-3.2.2-9] disabled features are announced as not available', async () => {
    await using br = await startBroker({
      VMQTT_LIMITS_RETAIN_AVAILABLE: 'false', VMQTT_LIMITS_WILDCARD_SUBSCRIPTIONS: 'false',
      VMQTT_LIMITS_SUBSCRIPTION_IDENTIFIERS: 'false', VMQTT_LIMITS_SHARED_SUBSCRIPTIONS: 'false',
    })
    const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: 'nocaps' })
    await using _c = c
    const p = (connack as IConnackPacket).properties ?? {}
    expect(p.retainAvailable).toBe(false)
    expect(p.wildcardSubscriptionAvailable).toBe(false)
    expect(p.subscriptionIdentifiersAvailable).toBe(false)
    expect(p.sharedSubscriptionAvailable).toBe(false)
  })

  for (const maxQos of [0, 1]) {
    test(`[MQTT-3.2.2-9] Maximum QoS ${maxQos} is announced when configured below 2`, async () => {
      await using br = await startBroker({ VMQTT_LIMITS_MAX_QOS: String(maxQos) })
      const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: 'maxqos' })
      await using _c = c
      expect((connack as IConnackPacket).properties?.maximumQoS).toBe(maxQos)
    })
  }

  test('[MQTT-3.2.2-21] [MQTT-3.2.2-22] Server Keep Alive caps a larger or zero keepalive when VMQTT_LIMITS_MAX_KEEPALIVE is set', async () => {
    await using br = await startBroker({ VMQTT_LIMITS_MAX_KEEPALIVE: '10' })
    for (const [keepalive, expected] of [[100, 10], [0, 10], [5, undefined]] as const) {
      const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: `ka-${keepalive}`, keepalive })
      await using _c = c
      expect((connack as IConnackPacket).properties?.serverKeepAlive).toBe(expected)
    }
  })
})

describe('keepalive', () => {
  test('[MQTT-3.1.2-24] (v5 [MQTT-3.1.2-22]) a silent client with keepalive 1 is closed after 1.5 s (v5: DISCONNECT 0x8D); keepalive 0 is never closed', async () => {
    await using br = await startBroker()
    const started = Date.now()
    const { client: v4 } = await RawClient.open(br.port, { version: 4, clientId: 'silent-4', keepalive: 1 })
    await using _a = v4
    const { client: v5 } = await RawClient.open(br.port, { version: 5, clientId: 'silent-5', keepalive: 1 })
    await using _b = v5
    const { client: none } = await RawClient.open(br.port, { version: 4, clientId: 'no-keepalive', keepalive: 0 })
    await using _c = none
    // the broker checks about once a second, so the close comes between 1.5 s and about 2.5 s
    await Promise.all([v4.closed(3200), v5.closed(3200)])
    // not before one and a half times the keepalive
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500)
    expect(await drainUntilClosed(v4)).toEqual([])
    const d = await v5.next(1)
    expect(d.cmd).toBe('disconnect')
    expect((d as IDisconnectPacket).reasonCode).toBe(0x8d)
    expect(none.isClosed).toBe(false)
    none.send(b.pingreq())
    expect(await none.nextRaw()).toEqual(b.pingresp())
  })
})

describe('session takeover', () => {
  for (const version of VERSIONS) {
    test(`[MQTT-3.1.4-3] v${version}: a second connection with the same client id closes the first${version === 5 ? ' with DISCONNECT 0x8E' : ''}`, async () => {
      await using br = await startBroker()
      const sessionProps = version === 5 ? { properties: { sessionExpiry: 60 } } : {}
      const { client: first } = await RawClient.open(br.port, { version, clientId: 'same', clean: false, ...sessionProps })
      await using _f = first
      const { client: second, connack } = await RawClient.open(br.port, { version, clientId: 'same', clean: false, ...sessionProps })
      await using _s = second
      await first.closed()
      if (version === 5) {
        const d = await first.next(1)
        expect(d.cmd).toBe('disconnect')
        expect((d as IDisconnectPacket).reasonCode).toBe(0x8e)
      } else {
        expect(await drainUntilClosed(first)).toEqual([])
      }
      // [MQTT-3.2.2-2] the session is resumed: session present 1
      expect((connack as IConnackPacket).sessionPresent).toBe(true)
      second.send(b.pingreq())
      expect(await second.nextRaw()).toEqual(b.pingresp())
    })

    test(`[MQTT-3.2.2-1] v${version}: clean start gives session present 0 even when a session existed`, async () => {
      await using br = await startBroker()
      const sessionProps = version === 5 ? { properties: { sessionExpiry: 60 } } : {}
      const { client: first } = await RawClient.open(br.port, { version, clientId: 'cleaner', clean: false, ...sessionProps })
      await using _f = first
      first.send(b.disconnect())
      await first.closed()
      const { client: again, connack: resumed } = await RawClient.open(br.port, { version, clientId: 'cleaner', clean: false, ...sessionProps })
      await using _a = again
      expect((resumed as IConnackPacket).sessionPresent).toBe(true)
      again.send(b.disconnect())
      await again.closed()
      const { client: clean, connack } = await RawClient.open(br.port, { version, clientId: 'cleaner', clean: true })
      await using _c = clean
      expect((connack as IConnackPacket).sessionPresent).toBe(false)
    })
  }
})

describe('connection limits', () => {
  test('no CONNECT within VMQTT_MQTT_CONNECT_TIMEOUT=1 closes the connection', async () => {
    await using br = await startBroker({ VMQTT_MQTT_CONNECT_TIMEOUT: '1' })
    await using c = await RawClient.connect(br.port)
    const started = Date.now()
    await c.closed(3500)
    expect(Date.now() - started).toBeGreaterThanOrEqual(900)
    expect(await drainUntilClosed(c)).toEqual([])
  })

  for (const version of VERSIONS) {
    test(`v${version}: VMQTT_MQTT_MAX_CONNECTIONS=1 refuses a second client with ${version === 5 ? '0x97' : '0x03'}`, async () => {
      await using br = await startBroker({ VMQTT_MQTT_MAX_CONNECTIONS: '1' })
      const { client: first, connack: ok } = await RawClient.open(br.port, { version, clientId: 'only' })
      await using _f = first
      expect(version === 5 ? (ok as IConnackPacket).reasonCode : (ok as IConnackPacket).returnCode).toBe(0)
      const { client: second, connack } = await RawClient.open(br.port, { version, clientId: 'extra' })
      await using _s = second
      const ack = connack as IConnackPacket
      if (version === 5) expect(ack.reasonCode).toBe(0x97)
      else expect(ack.returnCode).toBe(0x03)
      await second.closed()
      // the first connection is unaffected
      first.send(b.pingreq())
      expect(await first.nextRaw()).toEqual(b.pingresp())
    })
  }
})

test('[MQTT-3.1.4-3] at VMQTT_MQTT_MAX_CONNECTIONS=1 a client may still take over its own session', async () => {
  await using br = await startBroker({ VMQTT_MQTT_MAX_CONNECTIONS: '1' })
  const { client: first } = await RawClient.open(br.port, { version: 5, clientId: 'only' })
  await using _f = first
  const { client: second, connack } = await RawClient.open(br.port, { version: 5, clientId: 'only' })
  await using _s = second
  expect((connack as IConnackPacket).reasonCode).toBe(0)
  await first.closed()
  second.send(b.pingreq())
  expect(await second.nextRaw()).toEqual(b.pingresp())
})

describe('enhanced authentication (v5)', () => {
  /** Challenge/response: CONNECT data "hello" -> challenge "nonce"; AUTH data "nonce-signed" -> success "welcome". */
  const TEST: EnhancedAuth = {
    step(ctx: AuthContext, data: Buffer | undefined) {
      const text = data?.toString() ?? ''
      if (ctx.state === undefined) {
        if (text !== 'hello') return { result: 'fail' }
        ctx.state = 'challenged'
        return { result: 'continue', data: Buffer.from('nonce') }
      }
      if (text === 'nonce-signed') {
        ctx.state = undefined
        return { result: 'success', data: Buffer.from(ctx.reauth ? 'welcome-again' : 'welcome') }
      }
      return { result: 'fail' }
    },
  }
  const opts = () => ({ authMethods: new Map([['TEST', TEST]]) })

  test('[MQTT-4.12.0-1] CONNECT with an authentication method when none is configured gets CONNACK 0x8C', async () => {
    await using br = await startBroker()
    const { client: c, connack } = await RawClient.open(br.port, { version: 5, clientId: 'auth-none', properties: { authMethod: 'TEST' } })
    await using _c = c
    expect((connack as IConnackPacket).reasonCode).toBe(0x8c)
    await c.closed()
  })

  test('[MQTT-4.12.0-2] [MQTT-4.12.0-5] challenge via AUTH 0x18, then CONNACK 0x00 carrying the method', async () => {
    await using br = await startBroker({}, opts())
    await using c = await RawClient.connect(br.port, { version: 5 })
    c.send(b.connect({ version: 5, clientId: 'auth-ok', properties: { authMethod: 'TEST', authData: 'hello' } }))
    const challenge = (await c.next()) as IAuthPacket
    expect(challenge.cmd).toBe('auth')
    expect(challenge.reasonCode).toBe(0x18)
    expect(challenge.properties?.authenticationMethod).toBe('TEST')
    expect(challenge.properties?.authenticationData?.toString()).toBe('nonce')
    c.send(b.auth({ reason: 0x18, properties: { authMethod: 'TEST', authData: 'nonce-signed' } }))
    const ack = (await c.next()) as IConnackPacket
    expect(ack.cmd).toBe('connack')
    expect(ack.reasonCode).toBe(0)
    expect(ack.properties?.authenticationMethod).toBe('TEST')
    expect(ack.properties?.authenticationData?.toString()).toBe('welcome')
  })

  test('[MQTT-4.12.0-4] a failed authentication gets CONNACK 0x87 and is closed', async () => {
    await using br = await startBroker({}, opts())
    await using c = await RawClient.connect(br.port, { version: 5 })
    c.send(b.connect({ version: 5, clientId: 'auth-bad', properties: { authMethod: 'TEST', authData: 'hello' } }))
    expect(((await c.next()) as IAuthPacket).reasonCode).toBe(0x18)
    c.send(b.auth({ reason: 0x18, properties: { authMethod: 'TEST', authData: 'wrong' } }))
    const ack = (await c.next()) as IConnackPacket
    expect(ack.cmd).toBe('connack')
    expect(ack.reasonCode).toBe(0x87)
    await c.closed()
  })

  test('[MQTT-4.12.1-1] re-authentication with AUTH 0x19 ends with AUTH 0x00', async () => {
    await using br = await startBroker({}, opts())
    await using c = await RawClient.connect(br.port, { version: 5 })
    c.send(b.connect({ version: 5, clientId: 'reauth', properties: { authMethod: 'TEST', authData: 'hello' } }))
    expect(((await c.next()) as IAuthPacket).reasonCode).toBe(0x18)
    c.send(b.auth({ reason: 0x18, properties: { authMethod: 'TEST', authData: 'nonce-signed' } }))
    expect(((await c.next()) as IConnackPacket).reasonCode).toBe(0)
    c.send(b.auth({ reason: 0x19, properties: { authMethod: 'TEST', authData: 'hello' } }))
    const challenge = (await c.next()) as IAuthPacket
    expect(challenge.cmd).toBe('auth')
    expect(challenge.reasonCode).toBe(0x18)
    c.send(b.auth({ reason: 0x18, properties: { authMethod: 'TEST', authData: 'nonce-signed' } }))
    const done = (await c.next()) as IAuthPacket
    expect(done.cmd).toBe('auth')
    expect(done.reasonCode).toBe(0)
    expect(done.properties?.authenticationMethod).toBe('TEST')
    expect(done.properties?.authenticationData?.toString()).toBe('welcome-again')
    // the connection stays usable
    c.send(b.pingreq())
    expect(await c.nextRaw()).toEqual(b.pingresp())
  })
})

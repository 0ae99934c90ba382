/**
 * SCRAM-SHA-256 enhanced authentication (spec 4.12) over a real socket: CONNECT, AUTH
 * challenge and CONNACK, and re-authentication, with a client written here on node:crypto.
 */
import { describe, expect, test } from 'bun:test'
import type { IAuthPacket, IConnackPacket, IDisconnectPacket } from 'mqtt-packet'
import { scramCredentials, ScramSha256Auth } from '../../src/auth/scram.ts'
import * as b from '../helpers/packet-builder.ts'
import { scramClient } from '../helpers/scram-client.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const METHOD = 'SCRAM-SHA-256'
const alice = scramCredentials('wonderland')
const opts = () => ({ authMethods: new Map([[METHOD, new ScramSha256Auth({ lookup: (u: string) => (u === 'alice' ? alice : undefined) })]]) })


/** CONNECT with client-first, answer the AUTH challenge; returns the CONNACK. */
async function handshake(c: RawClient, scram: ReturnType<typeof scramClient>, connect: b.ConnectOpts = {}): Promise<IConnackPacket> {
  c.send(b.connect({ version: 5, clientId: 'scram-1', ...connect, properties: { authMethod: METHOD, authData: scram.first } }))
  const challenge = (await c.next()) as IAuthPacket
  expect([challenge.cmd, challenge.reasonCode, challenge.properties?.authenticationMethod]).toEqual(['auth', 0x18, METHOD])
  c.send(b.auth({ reason: 0x18, properties: { authMethod: METHOD, authData: scram.final(challenge.properties!.authenticationData!.toString()) } }))
  return (await c.next()) as IConnackPacket
}

describe('SCRAM-SHA-256 over MQTT 5 enhanced authentication', () => {
  test('[MQTT-4.12.0-2] [MQTT-4.12.0-5] right password: CONNACK 0x00 with the method and the server signature', async () => {
    await using br = await startBroker({}, opts())
    await using c = await RawClient.connect(br.port, { version: 5 })
    const scram = scramClient('alice', 'wonderland')
    const ack = await handshake(c, scram, { username: 'alice' })
    expect([ack.cmd, ack.reasonCode, ack.properties?.authenticationMethod]).toEqual(['connack', 0, METHOD])
    expect(ack.properties?.authenticationData?.toString()).toBe(scram.serverFinal())
    c.send(b.pingreq())
    expect(await c.nextRaw()).toEqual(b.pingresp())
  })

  test('[MQTT-4.12.0-4] wrong password: CONNACK 0x86 after the challenge, then close', async () => {
    await using br = await startBroker({}, opts())
    await using c = await RawClient.connect(br.port, { version: 5 })
    const ack = await handshake(c, scramClient('alice', 'looking-glass'))
    expect([ack.cmd, ack.reasonCode]).toEqual(['connack', 0x86])
    await c.closed()
  })

  test('[MQTT-4.12.0-4] channel binding requested: CONNACK 0x8C without a challenge', async () => {
    await using br = await startBroker({}, opts())
    await using c = await RawClient.connect(br.port, { version: 5 })
    c.send(b.connect({ version: 5, clientId: 'scram-cb', properties: { authMethod: METHOD, authData: scramClient('alice', 'x', 'p=tls-unique,,').first } }))
    const ack = (await c.next()) as IConnackPacket
    expect([ack.cmd, ack.reasonCode]).toEqual(['connack', 0x8c])
    await c.closed()
  })

  test('[MQTT-4.12.1-1] [MQTT-4.12.1-2] re-authentication ends in AUTH 0x00 with the signature; a failed one in DISCONNECT 0x87', async () => {
    await using br = await startBroker({}, opts())
    await using c = await RawClient.connect(br.port, { version: 5 })
    expect((await handshake(c, scramClient('alice', 'wonderland'), { username: 'alice' })).reasonCode).toBe(0)
    const again = scramClient('alice', 'wonderland')
    c.send(b.auth({ reason: 0x19, properties: { authMethod: METHOD, authData: again.first } }))
    const challenge = (await c.next()) as IAuthPacket
    expect([challenge.cmd, challenge.reasonCode]).toEqual(['auth', 0x18])
    c.send(b.auth({ reason: 0x18, properties: { authMethod: METHOD, authData: again.final(challenge.properties!.authenticationData!.toString()) } }))
    const done = (await c.next()) as IAuthPacket
    expect([done.cmd, done.reasonCode, done.properties?.authenticationData?.toString()]).toEqual(['auth', 0, again.serverFinal()])
    const wrong = scramClient('alice', 'nope')
    c.send(b.auth({ reason: 0x19, properties: { authMethod: METHOD, authData: wrong.first } }))
    const challenge2 = (await c.next()) as IAuthPacket
    c.send(b.auth({ reason: 0x18, properties: { authMethod: METHOD, authData: wrong.final(challenge2.properties!.authenticationData!.toString()) } }))
    const d = (await c.next()) as IDisconnectPacket
    expect([d.cmd, d.reasonCode]).toEqual(['disconnect', 0x87])
    await c.closed()
  })
})

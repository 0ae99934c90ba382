/**
 * PROXY protocol on the MQTT TCP listener (VMQTT_MQTT_TRUSTED_PROXIES): connections from a
 * trusted load balancer carry the client's address in a v1 or v2 header; other peers are direct
 * clients whose PROXY lines are just bad MQTT. Header bytes are written out here by hand.
 */
import { describe, expect, test } from 'bun:test'
import type { IConnackPacket, ISubackPacket } from 'mqtt-packet'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const TRUSTED = { VMQTT_MQTT_TRUSTED_PROXIES: '127.0.0.1', VMQTT_MQTT_CONNECT_TIMEOUT: '2' }
const v2Header = (a: number[]) => Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c, ...a, 10, 0, 0, 1, 0xc8, 0x22, 0x07, 0x5b,
])

for (const version of [4, 5] as const) describe(`MQTT ${version === 5 ? '5' : '3.1.1'} behind a proxy`, () => {
  test('a v1 header, then CONNECT in the same write: the client address is the one in the header', async () => {
    await using br = await startBroker(TRUSTED)
    const c = await RawClient.connect(br.port, { version })
    c.send(Buffer.concat([Buffer.from('PROXY TCP4 198.51.100.9 10.0.0.1 51234 1883\r\n'), b.connect({ version, clientId: `p1-${version}` })]))
    const ack = (await c.nextOf('connack')) as IConnackPacket
    expect(version === 5 ? ack.reasonCode : ack.returnCode).toBe(0)
    expect(br.broker.connectionOf(`p1-${version}`)?.socket.remoteAddress).toBe('198.51.100.9')
    c.close()
  })

  test('a v2 header split across writes, then MQTT; ACL ip: rules see the client address', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmqtt-proxy-'))
    try {
      writeFileSync(join(dir, 'acl'), 'allow ip:203.0.113.0/24 subscribe from-lb/#\n')
      await using br = await startBroker({ ...TRUSTED, VMQTT_ACL_FILE: join(dir, 'acl'), VMQTT_AUTH_ANONYMOUS: 'true' })
      const c = await RawClient.connect(br.port, { version })
      const h = v2Header([203, 0, 113, 7])
      c.send(h.subarray(0, 7))
      c.send(Buffer.concat([h.subarray(7), b.connect({ version, clientId: `p2-${version}` })]))
      await c.nextOf('connack')
      expect(br.broker.connectionOf(`p2-${version}`)?.socket.remoteAddress).toBe('203.0.113.7')
      c.send(b.subscribe(1, [{ topic: 'from-lb/x', qos: 0 }], { version }))
      expect(((await c.nextOf('suback')) as ISubackPacket).granted).toEqual([0])
      c.close()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

test('a trusted proxy without a header, or with a broken one, is closed; others keep working', async () => {
  await using br = await startBroker(TRUSTED)
  const plain = await RawClient.connect(br.port, { version: 4 })
  plain.send(b.connect({ version: 4, clientId: 'no-header' }))
  await plain.closed()
  const broken = await RawClient.connect(br.port, { version: 4 })
  broken.send(Buffer.from('PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n'))
  await broken.closed()
  // silence: closed once the header timeout (the connect timeout, 2 s here) passes
  const silent = await RawClient.connect(br.port, { version: 4 })
  await silent.closed(4000)
  const ok = await RawClient.connect(br.port, { version: 4 })
  ok.send(Buffer.concat([Buffer.from('PROXY UNKNOWN\r\n'), b.connect({ version: 4, clientId: 'unknown-src' })]))
  await ok.nextOf('connack')
  expect(br.broker.connectionOf('unknown-src')?.socket.remoteAddress).toBe('127.0.0.1')
  ok.close()
})

test('a peer that is not a trusted proxy cannot claim an address: its PROXY line is bad MQTT', async () => {
  await using br = await startBroker(TRUSTED)
  const spoof = await RawClient.connect(br.port, { version: 4, localAddress: '127.0.0.2' })
  spoof.send(Buffer.concat([Buffer.from('PROXY TCP4 198.51.100.9 10.0.0.1 51234 1883\r\n'), b.connect({ version: 4, clientId: 'spoof' })]))
  await spoof.closed()
  expect(br.broker.connectionOf('spoof')).toBeUndefined()
  const direct = await RawClient.connect(br.port, { version: 4, localAddress: '127.0.0.2' })
  direct.send(b.connect({ version: 4, clientId: 'direct' }))
  await direct.nextOf('connack')
  expect(br.broker.connectionOf('direct')?.socket.remoteAddress).toBe('127.0.0.2')
  direct.close()
})

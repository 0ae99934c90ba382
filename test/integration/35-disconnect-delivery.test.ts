/**
 * Issue 13 section 3: a server DISCONNECT (or a refusing CONNACK) reaches a client that sent
 * more than the broker reads and reads only after sending. Closing a socket with unread input
 * makes the kernel answer with RST, and the peer then discards the DISCONNECT it had not read.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeCerts, type TestCerts } from '../helpers/certs.ts'
import * as b from '../helpers/packet-builder.ts'
import { LateReader } from '../helpers/late-reader.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

let certs: TestCerts
beforeAll(async () => { certs = await makeCerts() })
afterAll(async () => { await certs.cleanup() })

/** Where `tail` (the last packet the server sent) starts in `bytes`, or -1. */
const endsWith = (bytes: Buffer, tail: Buffer) => bytes.length >= tail.length && bytes.subarray(bytes.length - tail.length).equals(tail)

/** `n` QoS 2 PUBLISH of `size` payload bytes, packet ids 1..n, in one buffer. */
function qos2Burst(n: number, size: number): Buffer {
  const payload = Buffer.alloc(size, 0x61)
  return Buffer.concat(Array.from({ length: n }, (_, i) => b.publish({ topic: 'flood/q2', qos: 2, packetId: i + 1, payload, version: 5 })))
}

describe('a server DISCONNECT reaches a client that reads only after sending', () => {
  test('v5: more QoS 2 PUBLISH than Receive Maximum gets DISCONNECT 0x93 and EOF, not ECONNRESET', async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_RECEIVE_MAXIMUM: '10' })
    const c = await LateReader.connect(broker.port)
    // 2,000 x 1 KiB: far more than one read of the broker takes, and than it processes before the violation
    await c.send(Buffer.concat([b.connect({ version: 5, clientId: 'late-q2' }), qos2Burst(2000, 1024)]))
    const r = await c.readAll()
    expect({ error: r.error, eof: r.eof }).toEqual({ error: null, eof: true })
    // the last packet is DISCONNECT 0x93 (Receive Maximum exceeded); the reason string may follow the code
    const at = r.bytes.lastIndexOf(0xe0)
    expect(at).toBeGreaterThan(0)
    expect(r.bytes[at + 2]).toBe(0x93)
    expect(broker.broker.onlineCount).toBe(0)
  })

  test('v5: a refusing CONNACK (not authorized) with data pipelined after CONNECT arrives, then EOF', async () => {
    await using broker = await startBroker({ VMQTT_AUTH_ANONYMOUS: 'false', VMQTT_AUTH_FAIL_DELAY: '0' })
    const c = await LateReader.connect(broker.port)
    await c.send(Buffer.concat([b.connect({ version: 5, clientId: 'late-refused' }), qos2Burst(2000, 1024)]))
    const r = await c.readAll()
    expect({ error: r.error, eof: r.eof }).toEqual({ error: null, eof: true })
    expect(r.bytes[0]).toBe(0x20)
    expect(r.bytes[r.bytes.readUInt8(1) > 0 ? 3 : 2]).toBe(0x87)
  })

  test('unsupported protocol level with data pipelined after CONNECT: CONNACK 0x01 arrives, then EOF', async () => {
    await using broker = await startBroker()
    const c = await LateReader.connect(broker.port)
    await c.send(Buffer.concat([b.connect({ version: 4, protocolLevel: 9, clientId: 'late-level' }), Buffer.alloc(2 * 1024 * 1024)]))
    const r = await c.readAll()
    expect({ error: r.error, eof: r.eof }).toEqual({ error: null, eof: true })
    expect(endsWith(r.bytes, Buffer.from([0x20, 2, 0, 1]))).toBe(true)
  })

  // node:tls reads the TCP stream ahead of a paused reader, so a reset did not lose the DISCONNECT
  // here even before lingering; this checks that the TLS shutdown keeps delivering it
  test('TLS: DISCONNECT 0x93 arrives before the end of the stream, not a reset', async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_RECEIVE_MAXIMUM: '10', VMQTT_TLS_HOST: '127.0.0.1', VMQTT_TLS_PORT: '0', VMQTT_TLS_CERT: certs.server.cert, VMQTT_TLS_KEY: certs.server.key })
    const c = await LateReader.connect(broker.broker.portOf('mqtts'), { tls: { ca: readFileSync(certs.ca.cert), servername: 'localhost' } })
    await c.send(Buffer.concat([b.connect({ version: 5, clientId: 'late-tls' }), qos2Burst(2000, 1024)]))
    const r = await c.readAll()
    expect({ error: r.error, eof: r.eof }).toEqual({ error: null, eof: true })
    const at = r.bytes.lastIndexOf(0xe0)
    expect(r.bytes[at + 2]).toBe(0x93)
  })

  test('the connection is closed for the broker at once; a quiet peer that never closes is released normally after about 1 s', async () => {
    await using broker = await startBroker()
    const c = await LateReader.connect(broker.port, { halfOpen: true })
    await c.send(Buffer.concat([b.connect({ version: 4, protocolLevel: 9, clientId: 'late-open' }), Buffer.alloc(256 * 1024)]))
    const r = await c.readAll(5000, true)
    expect(r.eof).toBe(true)
    // FIN received, our side still open: the broker forgot the connection, only the socket lingers
    expect(broker.broker.connectionCount).toBe(0)
    expect(broker.broker.linger.size).toBe(1)
    const t0 = Date.now()
    await until('the lingering socket to be released', () => broker.broker.linger.size === 0, 2500)
    expect(Date.now() - t0).toBeLessThan(2500)
    c.destroy()
  })

  test('a client that reads only 1.5 s after sending (after the linger) still gets DISCONNECT 0x93 and EOF: normal close, no RST', async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_RECEIVE_MAXIMUM: '10' })
    // its own process: an in-process client's socket is read ahead by the runtime
    const child = Bun.spawn([process.execPath, join(import.meta.dir, '../helpers/slow-reader-process.ts'), String(broker.port), '2000', '1500'], { stdout: 'pipe', stderr: 'inherit' })
    const out = await new Response(child.stdout).text()
    await child.exited
    const r = JSON.parse(out) as { bytes: string; eof: boolean; error: string | null }
    // before: the linger ended with RST; the client's write failed (EPIPE) and it read nothing
    expect({ error: r.error, eof: r.eof }).toEqual({ error: null, eof: true })
    const bytes = Buffer.from(r.bytes, 'hex')
    const at = bytes.lastIndexOf(0xe0)
    expect(bytes[at + 2]).toBe(0x93)
  })

  test('a peer that keeps sending is cut off (abortive close) after about 1 s', async () => {
    await using broker = await startBroker()
    const c = await LateReader.connect(broker.port, { halfOpen: true })
    await c.send(Buffer.concat([b.connect({ version: 4, protocolLevel: 9, clientId: 'late-sender' }), Buffer.alloc(1024)]))
    const r = await c.readAll(5000, true)
    expect(r.eof).toBe(true)
    const t0 = Date.now()
    const closed = c.closed(4000)
    // a sender that never stops: 1 KiB every 20 ms
    const sending = setInterval(() => { void c.send(Buffer.alloc(1024)) }, 20)
    try {
      await closed
    } finally {
      clearInterval(sending)
    }
    expect(Date.now() - t0).toBeLessThan(2500)
    expect(broker.broker.linger.size).toBe(0)
  })

  test('WebSocket: the close frame after a refusing CONNACK carries a reason', async () => {
    await using broker = await startBroker({ VMQTT_WS_HOST: '127.0.0.1', VMQTT_WS_PORT: '0' })
    const ws = new WebSocket(`ws://127.0.0.1:${broker.broker.portOf('ws')}/mqtt`, 'mqtt')
    ws.binaryType = 'arraybuffer'
    const got: Buffer[] = []
    ws.onmessage = (e) => got.push(Buffer.from(e.data as ArrayBuffer))
    const closed = new Promise<CloseEvent>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no close frame within 3 s')), 3000)
      ws.onclose = (e) => { clearTimeout(timer); resolve(e) }
    })
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject })
    ws.send(b.connect({ version: 4, protocolLevel: 9, clientId: 'ws-level' }))
    const e = await closed
    expect(Buffer.concat(got)).toEqual(Buffer.from([0x20, 2, 0, 1]))
    expect({ code: e.code, reason: e.reason }).toEqual({ code: 1000, reason: 'MQTT connection closed by the server' })
  })
})

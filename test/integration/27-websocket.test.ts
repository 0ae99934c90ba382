/**
 * MQTT over WebSocket (ws) and secure WebSocket (wss) over real sockets: MQTT.js clients next to
 * TCP clients, the subprotocol and path rules, the admin app on the same port, packets split
 * across and packed into WebSocket messages (expected bytes from the independent packet builder),
 * malformed input, text frames, X-Forwarded-For from trusted proxies only, a subscriber that
 * stops reading, mutual TLS and certificate reload on wss.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { connect as netConnect, type Socket } from 'node:net'
import * as tls from 'node:tls'
import mqtt, { type MqttClient } from 'mqtt'
import type { Logger } from '../../src/log.ts'
import { clientAddress, listenWs, WS_HIGH_WATER, WsSocket } from '../../src/transport/websocket.ts'
import { makeCerts, type TestCerts } from '../helpers/certs.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker, type TestBroker } from '../helpers/start-broker.ts'

const WS_ENV = { VMQTT_WS_HOST: '127.0.0.1', VMQTT_WS_PORT: '0' }
const silent: Logger = { debug() {}, info() {}, warn() {}, error() {}, enabled: () => false }

let certs: TestCerts
beforeAll(async () => { certs = await makeCerts() })
afterAll(async () => { await certs.cleanup() })

const wsUrl = (tb: TestBroker, name = 'ws') => `${name}://127.0.0.1:${tb.broker.portOf(name)}/mqtt`

/** Resolves with the first message on `topic`, or rejects after ms. */
function nextMessage(c: MqttClient, topic: string, ms = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${topic} within ${ms}ms`)), ms)
    const on = (t: string, payload: Buffer) => {
      if (t !== topic) return
      clearTimeout(timer)
      c.off('message', on)
      resolve(payload)
    }
    c.on('message', on)
  })
}

/** Length of the first whole MQTT frame in buf, -1 when incomplete. */
function mqttFrameSize(buf: Uint8Array): number {
  let len = 0, mult = 1
  for (let i = 1; i <= 4; i++) {
    if (i >= buf.length) return -1
    len += (buf[i]! & 0x7f) * mult
    mult *= 128
    if ((buf[i]! & 0x80) === 0) return buf.length >= i + 1 + len ? i + 1 + len : -1
  }
  throw new Error('remaining length longer than 4 bytes')
}

/** A raw MQTT client on Bun's WebSocket client: sends the messages given, splits what arrives into MQTT frames. */
class WsRaw {
  frames: Buffer[] = []
  #pending = Buffer.alloc(0)
  #wake: (() => void) | null = null
  closeCode = -1
  constructor(readonly ws: WebSocket) {
    ws.binaryType = 'arraybuffer'
    ws.onmessage = (e) => {
      this.#pending = Buffer.concat([this.#pending, Buffer.from(e.data as ArrayBuffer)])
      for (let n = mqttFrameSize(this.#pending); n > 0; n = mqttFrameSize(this.#pending)) {
        this.frames.push(this.#pending.subarray(0, n))
        this.#pending = this.#pending.subarray(n)
      }
      this.#wake?.()
    }
    ws.onclose = (e) => { this.closeCode = e.code; this.#wake?.() }
  }

  static open(url: string, o: { protocols?: string | string[]; headers?: Record<string, string> } = {}): Promise<WsRaw> {
    const ws = new WebSocket(url, { protocols: o.protocols ?? 'mqtt', headers: o.headers ?? {} })
    return new Promise((resolve, reject) => {
      ws.onopen = () => resolve(new WsRaw(ws))
      ws.onerror = () => reject(new Error(`WebSocket ${url} did not open`))
    })
  }

  send(...messages: Uint8Array[]): void {
    for (const m of messages) this.ws.send(m)
  }

  #until(ready: () => boolean, what: string, ms = 3000): Promise<void> {
    if (ready()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.#wake = null; reject(new Error(`WsRaw: no ${what} within ${ms}ms`)) }, ms)
      this.#wake = () => { if (ready()) { clearTimeout(timer); this.#wake = null; resolve() } }
    })
  }

  async next(): Promise<Buffer> {
    await this.#until(() => this.frames.length > 0 || this.closeCode >= 0, 'packet')
    const f = this.frames.shift()
    if (f === undefined) throw new Error(`WsRaw: closed (code ${this.closeCode}) while waiting for a packet`)
    return f
  }

  async closed(): Promise<number> {
    await this.#until(() => this.closeCode >= 0, 'close')
    return this.closeCode
  }
}

/** Raw HTTP over TCP: sends the request head and resolves with the response head and the socket. */
function httpRaw(port: number, head: string): Promise<{ status: number; head: string; sock: Socket }> {
  return new Promise((resolve, reject) => {
    const sock = netConnect(port, '127.0.0.1')
    let buf = ''
    sock.once('error', reject)
    sock.on('connect', () => sock.write(`${head}\r\n\r\n`))
    const onData = (d: Buffer) => {
      buf += d.toString('latin1')
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      sock.off('data', onData)
      resolve({ status: Number(buf.split(' ')[1]), head: buf.slice(0, end), sock })
    }
    sock.on('data', onData)
  })
}

const upgradeHead = (path: string, extra: string[] = []) => [`GET ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Upgrade: websocket',
  'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', ...extra].join('\r\n')

/** One client-to-server WebSocket frame (masked, as RFC 6455 requires of clients). */
function wsFrame(payload: Uint8Array, o: { opcode?: number; fin?: boolean } = {}): Buffer {
  const len = payload.length
  const head = len < 126 ? [len | 0x80] : len < 65536 ? [126 | 0x80, len >> 8, len & 0xff] : [127 | 0x80, 0, 0, 0, 0, (len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff]
  const mask = [0x12, 0x34, 0x56, 0x78]
  const body = Buffer.from(payload).map((x, i) => x ^ mask[i % 4]!)
  return Buffer.concat([Buffer.from([((o.fin ?? true) ? 0x80 : 0) | (o.opcode ?? 2), ...head, ...mask]), body])
}

describe('ws: MQTT.js next to TCP clients', () => {
  test.each([4, 5] as const)('v%d: a WebSocket subscriber gets a TCP publish and a TCP subscriber a WebSocket publish', async (v) => {
    await using tb = await startBroker(WS_ENV)
    const ws = await mqtt.connectAsync(wsUrl(tb), { protocolVersion: v, clientId: `ws-${v}`, reconnectPeriod: 0 })
    const tcp = await mqtt.connectAsync(tb.url, { protocolVersion: v, clientId: `tcp-${v}`, reconnectPeriod: 0 })
    try {
      await ws.subscribeAsync('to/ws', { qos: 1 })
      await tcp.subscribeAsync('to/tcp', { qos: 1 })
      const atWs = nextMessage(ws, 'to/ws'), atTcp = nextMessage(tcp, 'to/tcp')
      await tcp.publishAsync('to/ws', 'from tcp', { qos: 1 })
      await ws.publishAsync('to/tcp', 'from ws', { qos: 1 })
      expect((await atWs).toString()).toBe('from tcp')
      expect((await atTcp).toString()).toBe('from ws')
      expect(tb.broker.connectionOf(`ws-${v}`)!.listener).toBe('ws')
    } finally {
      await ws.endAsync()
      await tcp.endAsync()
    }
  })
})

describe('ws: upgrade rules', () => {
  test('no or unknown subprotocol → 400; mqttv3.1 accepted; the first acceptable offer wins; plain GET → 400; other path → 404', async () => {
    await using tb = await startBroker(WS_ENV)
    const port = tb.broker.portOf('ws')
    for (const extra of [[], ['Sec-WebSocket-Protocol: chat'], ['Sec-WebSocket-Protocol: MQTT']]) {
      const r = await httpRaw(port, upgradeHead('/mqtt', extra))
      expect(r.status).toBe(400)
      r.sock.destroy()
    }
    const plain = await fetch(`http://127.0.0.1:${port}/mqtt`)
    expect(plain.status).toBe(400)
    expect(await plain.text()).toContain('subprotocol')
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(404)
    const wrongPath = await httpRaw(port, upgradeHead('/other', ['Sec-WebSocket-Protocol: mqtt']))
    expect(wrongPath.status).toBe(404)
    wrongPath.sock.destroy()
    const ok = await httpRaw(port, upgradeHead('/mqtt', ['Sec-WebSocket-Protocol: chat, mqttv3.1, mqtt']))
    expect(ok.status).toBe(101)
    expect(ok.head).toMatch(/\r\nSec-WebSocket-Protocol: mqttv3\.1(\r\n|$)/i)
    ok.sock.destroy()
    const v31 = await WsRaw.open(wsUrl(tb), { protocols: 'mqttv3.1' })
    expect(v31.ws.protocol).toBe('mqttv3.1')
    v31.send(b.connect({ version: 3, clientId: 'v31' }))
    expect(await v31.next()).toEqual(b.connack())
    v31.ws.close()
  })

  test('ws.admin: the admin app answers on the WebSocket port (single-port gateway) and MQTT still upgrades', async () => {
    await using tb = await startBroker({ ...WS_ENV, VMQTT_WS_ADMIN: 'true' })
    const port = tb.broker.portOf('ws')
    const health = await fetch(`http://127.0.0.1:${port}/health`)
    expect(health.status).toBe(200)
    expect(((await health.json()) as { status: string }).status).toBe('ok')
    expect((await fetch(`http://127.0.0.1:${port}/api/v1/stats`)).status).toBe(401)
    const c = await mqtt.connectAsync(wsUrl(tb), { clientId: 'gw', reconnectPeriod: 0 })
    expect(c.connected).toBe(true)
    await c.endAsync()
  })
})

describe('ws: framing', () => {
  test('a CONNECT split across three messages, then SUBSCRIBE and PUBLISH in one message: byte-exact answers', async () => {
    await using tb = await startBroker(WS_ENV)
    const c = await WsRaw.open(wsUrl(tb))
    const conn = b.connect({ clientId: 'split', keepalive: 30 })
    c.send(conn.subarray(0, 1), conn.subarray(1, 7), conn.subarray(7))
    expect(await c.next()).toEqual(b.connack())
    const sub = b.subscribe(1, [{ topic: 'f/#', qos: 0 }])
    const pubs = [b.publish({ topic: 'f/1', payload: 'one' }), b.publish({ topic: 'f/2', payload: 'two' })]
    c.send(Buffer.concat([sub, ...pubs]))
    expect(await c.next()).toEqual(b.suback(1, [0]))
    expect(await c.next()).toEqual(pubs[0]!)
    expect(await c.next()).toEqual(pubs[1]!)
    // the end of one packet and the start of the next in one message, the rest in another
    const both = Buffer.concat([b.publish({ topic: 'f/3', payload: 'three' }), b.pingreq()])
    c.send(both.subarray(0, 5), both.subarray(5, both.length - 1), both.subarray(both.length - 1))
    expect(await c.next()).toEqual(b.publish({ topic: 'f/3', payload: 'three' }))
    expect(await c.next()).toEqual(b.pingresp())
    c.ws.close()
  })

  test('a message in continuation frames is one stream of bytes', async () => {
    await using tb = await startBroker(WS_ENV)
    const r = await httpRaw(tb.broker.portOf('ws'), upgradeHead('/mqtt', ['Sec-WebSocket-Protocol: mqtt']))
    expect(r.status).toBe(101)
    const got: Buffer[] = []
    const connack = new Promise<void>((resolve) => r.sock.on('data', (d: Buffer) => { got.push(d); if (Buffer.concat(got).length >= 6) resolve() }))
    const conn = b.connect({ clientId: 'frag' })
    r.sock.write(Buffer.concat([wsFrame(conn.subarray(0, 4), { fin: false }), wsFrame(conn.subarray(4, 9), { opcode: 0, fin: false }), wsFrame(conn.subarray(9), { opcode: 0 })]))
    await connack
    // server frames are unmasked: 0x82 (binary, FIN), length 4, then CONNACK
    expect(Buffer.concat(got)).toEqual(Buffer.concat([Buffer.from([0x82, 4]), b.connack()]))
    r.sock.destroy()
  })

  test('every message reaches the connection in a buffer of its own that later messages do not change', async () => {
    const chunks: Buffer[] = []
    let wake = () => {}
    const N = 64
    const l = listenWs({ host: '127.0.0.1', port: 0, path: '/mqtt', maxPacketSize: 1 << 20, trustedProxies: [], log: silent },
      () => ({ data: (c) => { chunks.push(c); wake() }, drain() {}, close() {} }))
    try {
      const c = await WsRaw.open(`ws://127.0.0.1:${l.port}/mqtt`)
      const all = new Promise<void>((resolve) => { wake = () => { if (chunks.length === N) resolve() } })
      for (let i = 0; i < N; i++) c.send(new Uint8Array(10 + (i % 5) * 1000).fill(i))
      await all
      for (let i = 0; i < N; i++) {
        expect(chunks[i]!.length).toBe(10 + (i % 5) * 1000)
        expect(chunks[i]!.every((x) => x === i)).toBe(true)
      }
      c.ws.close()
    } finally {
      l.stop(true)
    }
  })
})

describe('ws: write contract', () => {
  test('write() takes whole messages while Bun holds at most WS_HIGH_WATER unsent, then 0 until drain()', async () => {
    let sock: WsSocket | null = null
    let drained = () => {}
    const l = listenWs({ host: '127.0.0.1', port: 0, path: '/mqtt', maxPacketSize: 1 << 20, trustedProxies: [], log: silent },
      (s) => { sock = s as WsSocket; return { data() {}, drain: () => drained(), close() {} } })
    try {
      const r = await httpRaw(l.port, upgradeHead('/mqtt', ['Sec-WebSocket-Protocol: mqtt']))
      expect(r.status).toBe(101)
      r.sock.pause()
      const chunk = new Uint8Array(64 * 1024)
      let accepted = 0
      for (let n = chunk.length; n === chunk.length; accepted += n) {
        n = sock!.write(chunk)
        expect([0, chunk.length]).toContain(n)
        if (accepted > 256 << 20) throw new Error('write() never refused')
      }
      expect(sock!.bufferedAmount).toBeGreaterThan(WS_HIGH_WATER)
      expect(sock!.bufferedAmount).toBeLessThanOrEqual(WS_HIGH_WATER + chunk.length)
      expect(sock!.write(chunk)).toBe(0)
      const drain = new Promise<void>((resolve) => { drained = resolve })
      r.sock.resume()
      await drain
      expect(sock!.write(chunk)).toBe(chunk.length)
      r.sock.destroy()
    } finally {
      l.stop(true)
    }
  })
})

describe('ws: end', () => {
  test('end() on a client that does not read closes the connection at once (a close frame would wait behind the unread bytes)', async () => {
    let sock: WsSocket | null = null
    let closed = () => {}
    const l = listenWs({ host: '127.0.0.1', port: 0, path: '/mqtt', maxPacketSize: 1 << 20, trustedProxies: [], log: silent },
      (s) => { sock = s as WsSocket; return { data() {}, drain() {}, close: () => closed() } })
    try {
      const r = await httpRaw(l.port, upgradeHead('/mqtt', ['Sec-WebSocket-Protocol: mqtt']))
      r.sock.pause()
      const chunk = new Uint8Array(64 * 1024)
      let written = 0
      for (let n = 1; n > 0; written += n) n = sock!.write(chunk)
      const gone = new Promise<void>((resolve, reject) => {
        closed = resolve
        setTimeout(() => reject(new Error('the connection was still open 2 s after end()')), 2000)
      })
      sock!.end()
      await gone
      // the client never gets what Bun still held: the socket was cut, not closed after a flush
      let received = 0
      r.sock.on('data', (d: Buffer) => { received += d.length })
      r.sock.on('error', () => {})
      const eof = new Promise((resolve) => r.sock.once('close', resolve))
      r.sock.resume()
      await eof
      expect(received).toBeLessThan(written)
    } finally {
      l.stop(true)
    }
  })
})

describe('ws: bad input', () => {
  test('[MQTT-3.3.1-4] v5: PUBLISH with QoS 3 → DISCONNECT 0x81 then close; garbage as the first packet → closed; the broker keeps serving', async () => {
    await using tb = await startBroker(WS_ENV)
    const c = await WsRaw.open(wsUrl(tb))
    c.send(b.connect({ version: 5, clientId: 'bad' }))
    expect((await c.next())[0]).toBe(0x20)
    const q3 = b.publish({ topic: 'm/q3', qos: 2, packetId: 1, version: 5 })
    q3[0] = 0x36
    c.send(q3)
    const d = await c.next()
    expect(d[0]).toBe(0xe0)
    expect(d[2]).toBe(0x81)
    await c.closed()
    const g = await WsRaw.open(wsUrl(tb))
    g.send(Buffer.from([0x00, 0x00]))
    await g.closed()
    expect(g.frames).toEqual([])
    const ok = await mqtt.connectAsync(wsUrl(tb), { protocolVersion: 5, clientId: 'after', reconnectPeriod: 0 })
    await ok.subscribeAsync('still/here')
    const m = nextMessage(ok, 'still/here')
    await ok.publishAsync('still/here', 'yes')
    expect((await m).toString()).toBe('yes')
    await ok.endAsync()
  })

  test('[MQTT-6.0.0-1] a text frame closes the connection (the will goes out: an abnormal close)', async () => {
    await using tb = await startBroker(WS_ENV)
    const watcher = await mqtt.connectAsync(tb.url, { clientId: 'watcher', reconnectPeriod: 0 })
    await watcher.subscribeAsync('wills/text')
    const will = nextMessage(watcher, 'wills/text')
    const c = await WsRaw.open(wsUrl(tb))
    c.send(b.connect({ clientId: 'texter', will: { topic: 'wills/text', payload: 'gone' } }))
    expect(await c.next()).toEqual(b.connack())
    c.ws.send(b.pingreq().toString('latin1'))
    expect(await c.closed()).toBe(1003)
    expect(c.frames).toEqual([])
    expect((await will).toString()).toBe('gone')
    await watcher.endAsync()
  })
})

describe('ws: client address', () => {
  test('clientAddress: the right-most address that is not a trusted proxy; garbage ends the walk', () => {
    const of = clientAddress(['127.0.0.1', '10.0.0.0/8', '::1'])
    expect(of('127.0.0.1', '203.0.113.9, 10.1.2.3')).toBe('203.0.113.9')
    expect(of('::ffff:127.0.0.1', '198.51.100.1, 203.0.113.9')).toBe('203.0.113.9')
    expect(of('192.0.2.7', '203.0.113.9')).toBe('192.0.2.7')
    expect(of('127.0.0.1', '10.0.0.1, 10.0.0.2')).toBe('10.0.0.1')
    expect(of('127.0.0.1', 'garbage, 10.0.0.2')).toBe('10.0.0.2')
    expect(of('::1', '2001:db8::5')).toBe('2001:db8::5')
    expect(of('127.0.0.1', null)).toBe('127.0.0.1')
    expect(clientAddress([])('127.0.0.1', '203.0.113.9')).toBe('127.0.0.1')
    expect(() => clientAddress(['10.0.0.0/33'])).toThrow(/prefix/)
    expect(() => clientAddress(['proxy.example'])).toThrow(/not an IP/)
  })

  test('X-Forwarded-For is honoured only when the peer is a trusted proxy', async () => {
    const headers = { 'X-Forwarded-For': '203.0.113.9, 10.9.9.9' }
    const addressWith = async (env: Record<string, string>) => {
      await using tb = await startBroker({ ...WS_ENV, ...env })
      const c = await WsRaw.open(wsUrl(tb), { headers })
      c.send(b.connect({ clientId: 'fwd' }))
      await c.next()
      const a = tb.broker.connectionOf('fwd')!.socket.remoteAddress
      c.ws.close()
      return a
    }
    expect(await addressWith({})).toBe('127.0.0.1')
    expect(await addressWith({ VMQTT_WS_TRUSTED_PROXIES: '192.0.2.1' })).toBe('127.0.0.1')
    expect(await addressWith({ VMQTT_WS_TRUSTED_PROXIES: '127.0.0.1' })).toBe('10.9.9.9')
    expect(await addressWith({ VMQTT_WS_TRUSTED_PROXIES: '127.0.0.0/8, 10.0.0.0/8' })).toBe('203.0.113.9')
  })
})

describe('ws: backpressure', () => {
  test('a subscriber that stops reading: QoS 0 beyond a quarter of maxPendingBytes is dropped, QoS 1 output past it disconnects; memory stays bounded; others keep working', async () => {
    const cap = 1 << 20
    await using tb = await startBroker({ ...WS_ENV, VMQTT_LIMITS_MAX_PENDING_BYTES: String(cap) })
    const r = await httpRaw(tb.broker.portOf('ws'), upgradeHead('/mqtt', ['Sec-WebSocket-Protocol: mqtt']))
    expect(r.status).toBe(101)
    const subscribed = new Promise<void>((resolve) => {
      let n = 0
      r.sock.on('data', (d: Buffer) => { n += d.length; if (n >= 2 + 4 + 2 + 5) resolve() })
    })
    r.sock.write(Buffer.concat([wsFrame(b.connect({ clientId: 'slow' })), wsFrame(b.subscribe(1, [{ topic: 'flood', qos: 1 }]))]))
    await subscribed
    r.sock.pause()
    const fast = await mqtt.connectAsync(wsUrl(tb), { clientId: 'fast', reconnectPeriod: 0 })
    await fast.subscribeAsync('side')
    const pub = await RawClient.open(tb.port, { clientId: 'pub' })
    const payload = Buffer.alloc(64 * 1024, 0x61)
    // measured after full collections: the test runner's RSS also holds garbage of earlier tests
    Bun.gc(true)
    const rss0 = process.memoryUsage().rss
    let maxPending = 0, sent = 0, id = 0
    /** 16 messages, then a PINGREQ round trip: the broker has handled them. */
    const round = async (qos: 0 | 1) => {
      const batch = Array.from({ length: 16 }, () => b.publish({ topic: 'flood', payload, qos, packetId: (id++ % 60000) + 1 }))
      pub.client.send(Buffer.concat([...batch, b.pingreq()]))
      sent += 16 * batch[0]!.length
      await pub.client.nextOf('pingresp')
      maxPending = Math.max(maxPending, tb.broker.connectionOf('slow')?.pendingBytes ?? 0)
    }
    while (sent < 32 << 20) await round(0)
    expect(tb.broker.connectionOf('slow')).toBeDefined()
    expect(tb.broker.stats.dropped).toBeGreaterThan(0)
    expect(maxPending).toBeLessThan(cap / 4 + 2 * payload.length)
    while (tb.broker.connectionOf('slow') !== undefined) {
      if (sent > 128 << 20) throw new Error('the slow subscriber was never disconnected')
      await round(1)
    }
    expect(maxPending).toBeLessThanOrEqual(cap + 16 * (payload.length + 100))
    // the WebSocket itself is cut off too (a close frame would wait behind the unread data)
    const gone = new Promise((resolve) => r.sock.once('close', resolve))
    r.sock.resume()
    await gone
    Bun.gc(true)
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 << 20)
    const side = nextMessage(fast, 'side')
    pub.client.send(b.publish({ topic: 'side', payload: 'ok' }))
    expect((await side).toString()).toBe('ok')
    r.sock.destroy()
    await fast.endAsync()
    await pub.client.close()
  })
})

describe('wss', () => {
  const tlsEnv = (mode: string, extra: Record<string, string> = {}) => ({
    ...WS_ENV, VMQTT_TLS_HOST: '127.0.0.1', VMQTT_TLS_PORT: '0', VMQTT_WSS_PORT: '0', VMQTT_TLS_CERT: certs.server.cert,
    VMQTT_TLS_KEY: certs.server.key, VMQTT_TLS_CA: certs.ca.cert, VMQTT_TLS_CLIENT_CERT: mode, ...extra,
  })
  const pem = (p: string) => readFileSync(p, 'utf8')

  test.each([4, 5] as const)('v%d: MQTT.js over wss:// exchanges messages with a TCP client', async (v) => {
    await using tb = await startBroker(tlsEnv('none'))
    const c = await mqtt.connectAsync(wsUrl(tb, 'wss'), { protocolVersion: v, clientId: 'secure', ca: pem(certs.ca.cert), reconnectPeriod: 0 })
    await c.subscribeAsync('s/x')
    const m = nextMessage(c, 's/x')
    const tcp = await mqtt.connectAsync(tb.url, { protocolVersion: v, reconnectPeriod: 0 })
    await tcp.publishAsync('s/x', 'over tls')
    expect((await m).toString()).toBe('over tls')
    expect(tb.broker.connectionOf('secure')!.listener).toBe('wss')
    await c.endAsync()
    await tcp.endAsync()
  })

  test('clientCert require: no certificate or one from another CA is refused at the handshake; alice connects', async () => {
    await using tb = await startBroker(tlsEnv('require'))
    const url = wsUrl(tb, 'wss')
    const attempt = (o: object) => mqtt.connectAsync(url, { ca: pem(certs.ca.cert), reconnectPeriod: 0, connectTimeout: 2000, ...o })
    await expect(attempt({})).rejects.toThrow()
    for (let i = 0; i < 5; i++) await expect(attempt({ cert: pem(certs.mallory.cert), key: pem(certs.mallory.key) })).rejects.toThrow()
    await expect(attempt({ cert: pem(certs.expired.cert), key: pem(certs.expired.key) })).rejects.toThrow()
    const alice = await attempt({ clientId: 'alice', cert: pem(certs.alice.cert), key: pem(certs.alice.key) })
    expect(alice.connected).toBe(true)
    // Bun.serve does not show the client certificate (oven-sh/bun#14097): no identity on wss
    expect(tb.broker.connectionOf('alice')!.socket.peerCertificate).toBeUndefined()
    await alice.endAsync()
  })

  test('certificate reload: new wss connections get the new certificate while an open one stays up', async () => {
    const dir = certs.path('reload-')
    const cert = `${dir}server.pem`, key = `${dir}server.key`
    await Bun.write(cert, Bun.file(certs.server.cert))
    await Bun.write(key, Bun.file(certs.server.key))
    await using tb = await startBroker(tlsEnv('none', { VMQTT_TLS_CERT: cert, VMQTT_TLS_KEY: key }))
    const port = tb.broker.portOf('wss')
    const cn = () => new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => { resolve(String(s.getPeerCertificate().subject.CN)); s.end() })
      s.on('error', reject)
    })
    const before = await cn()
    const open = await mqtt.connectAsync(`wss://127.0.0.1:${port}/mqtt`, { clientId: 'stays', ca: pem(certs.ca.cert), reconnectPeriod: 0 })
    const next = await certs.issue('server-next', { cn: 'next server', sans: ['IP:127.0.0.1'], usage: 'serverAuth' })
    await Bun.write(cert, Bun.file(next.cert))
    await Bun.write(key, Bun.file(next.key))
    await tb.broker.reloadTls()
    expect(before).not.toBe('next server')
    expect(await cn()).toBe('next server')
    await open.subscribeAsync('r/x')
    const m = nextMessage(open, 'r/x')
    await open.publishAsync('r/x', 'still up')
    expect((await m).toString()).toBe('still up')
    await open.endAsync()
  })
})

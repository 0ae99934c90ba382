/**
 * MQTT over QUIC (listener "quic", ALPN mqtt, TLS 1.3, MQTT on the first client-initiated
 * bidirectional stream). Clients are the project's QuicMqttClient; the other side is a raw TCP
 * client, and expected bytes come from the independent packet builder. Failed handshakes and
 * clients that vanish must never take the broker down.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import mqttPacket, { type Packet } from 'mqtt-packet'
import type { Logger } from '../../src/log.ts'
import { QuicMqttClient, type QuicClientOptions } from '../../src/transport/quic-client.ts'
import { quicIdleTimeout } from '../../src/transport/quic.ts'
import { makeCerts, type TestCerts } from '../helpers/certs.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker, type TestBroker } from '../helpers/start-broker.ts'

process.env.NODE_NO_WARNINGS = '1'

type V = 4 | 5

/** What the broker logs at warn and error (failed handshakes are warnings; errors must not happen). */
const logged: { level: string; msg: string; fields: Record<string, unknown> }[] = []
const captureLog: Logger = {
  debug() {}, info() {},
  warn(msg, fields = {}) { logged.push({ level: 'warn', msg, fields }) },
  error(msg, fields = {}) { logged.push({ level: 'error', msg, fields }) },
  enabled: (level) => level === 'warn' || level === 'error',
}

let certs: TestCerts
let tb: TestBroker
let quicPort = 0
let seq = 0

const quicEnv = (c: TestCerts, extra: Record<string, string> = {}) => ({
  VMQTT_TLS_PORT: 'off', VMQTT_TLS_CERT: c.server.cert, VMQTT_TLS_KEY: c.server.key,
  VMQTT_QUIC_HOST: '127.0.0.1', VMQTT_QUIC_PORT: '0', ...extra,
})

beforeAll(async () => {
  certs = await makeCerts()
  tb = await startBroker(quicEnv(certs), { log: captureLog })
  quicPort = tb.broker.portOf('quic')
})
afterAll(async () => {
  await tb?.close()
  await certs?.cleanup()
})

/** A raw MQTT client over QUIC: bytes out as given, frames in decoded by mqtt-packet. */
class QuicRaw {
  readonly q: QuicMqttClient
  version: V
  #pending = Buffer.alloc(0)
  #frames: Buffer[] = []
  #wake: (() => void) | null = null
  closeError: Error | undefined

  private constructor(q: QuicMqttClient, version: V) {
    this.q = q
    this.version = version
    q.ondata = (chunk) => {
      this.#pending = Buffer.concat([this.#pending, chunk])
      for (;;) {
        const size = frameSize(this.#pending)
        if (size < 0 || this.#pending.length < size) break
        this.#frames.push(Buffer.from(this.#pending.subarray(0, size)))
        this.#pending = this.#pending.subarray(size)
      }
      this.#wake?.()
    }
    q.onclose = (e) => { this.closeError = e; this.#wake?.() }
  }

  static async connect(version: V, port = quicPort, opts: QuicClientOptions = {}): Promise<QuicRaw> {
    return new QuicRaw(await QuicMqttClient.connect('127.0.0.1', port, { ca: certs.ca.cert, ...opts }), version)
  }

  /** Connects and completes CONNECT / CONNACK; returns the raw CONNACK frame too. */
  static async open(connect: b.ConnectOpts & { version: V }, port = quicPort, opts: QuicClientOptions = {}): Promise<{ c: QuicRaw; raw: Buffer }> {
    const c = await QuicRaw.connect(connect.version, port, opts)
    c.send(b.connect(connect))
    const raw = await c.nextRaw()
    expect(c.decode(raw).cmd).toBe('connack')
    return { c, raw }
  }

  get isClosed(): boolean {
    return this.q.closed
  }

  send(bytes: Uint8Array): void {
    this.q.write(bytes)
  }

  async nextRaw(ms = 3000): Promise<Buffer> {
    await this.#until(() => this.#frames.length > 0 || this.q.closed, ms, 'a packet')
    const f = this.#frames.shift()
    if (f === undefined) throw new Error(`QuicRaw: closed while waiting for a packet${this.closeError ? ` (${this.closeError.message})` : ''}`)
    return f
  }

  async next(ms = 3000): Promise<Packet> {
    return this.decode(await this.nextRaw(ms))
  }

  async nextOf(cmd: Packet['cmd'], ms = 3000): Promise<Packet> {
    for (;;) {
      const p = await this.next(ms)
      if (p.cmd === cmd) return p
    }
  }

  async closed(ms = 3000): Promise<void> {
    await this.#until(() => this.q.closed, ms, 'the server to close the connection')
  }

  decode(frame: Buffer): Packet {
    const parser = mqttPacket.parser({ protocolVersion: this.version })
    let packet: Packet | null = null
    parser.on('packet', (p: Packet) => { packet ??= p })
    parser.on('error', (e: Error) => { throw e })
    parser.parse(frame)
    if (packet === null) throw new Error(`no packet in ${frame.toString('hex')}`)
    return packet
  }

  #until(ready: () => boolean, ms: number, what: string): Promise<void> {
    if (ready()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.#wake = null; reject(new Error(`QuicRaw: timed out after ${ms}ms waiting for ${what}`)) }, ms)
      this.#wake = () => {
        if (!ready()) return
        clearTimeout(timer)
        this.#wake = null
        resolve()
      }
    })
  }
}

function frameSize(buf: Buffer): number {
  let len = 0
  let mult = 1
  for (let i = 1; i < 5; i++) {
    if (i >= buf.length) return -1
    const x = buf[i]!
    len += (x & 0x7f) * mult
    mult *= 128
    if ((x & 0x80) === 0) return i + 1 + len
  }
  return -2
}

/** The TCP side: proves the broker keeps serving and routes between transports. */
async function tcpClient(version: V, clientId: string, sub?: string) {
  const { client } = await RawClient.open(tb.port, { version, clientId })
  if (sub !== undefined) {
    client.send(b.subscribe(1, [{ topic: sub, qos: 2 }], { version }))
    expect(await client.nextRaw()).toEqual(b.suback(1, [2], { version }))
  }
  return client
}

describe.each([4, 5] as const)('MQTT v%d over QUIC', (version) => {
  test('CONNECT gets a CONNACK on the first stream; the connection is on the quic listener', async () => {
    const id = `q-conn-${version}`
    const { c, raw } = await QuicRaw.open({ version, clientId: id })
    if (version === 4) expect(raw).toEqual(b.connack({ version }))
    else expect(c.decode(raw)).toMatchObject({ cmd: 'connack', reasonCode: 0, sessionPresent: false })
    const conn = tb.broker.connectionOf(id)!
    expect(conn.listener).toBe('quic')
    expect(conn.socket.remoteAddress).toBe('127.0.0.1')
    c.send(b.disconnect({ version }))
    await c.closed()
  })

  test('QoS 0, 1 and 2: QUIC publisher to a TCP subscriber, with the acks byte for byte', async () => {
    const sub = await tcpClient(version, `tcp-sub-${version}`, `qp${version}/#`)
    const { c: pub } = await QuicRaw.open({ version, clientId: `q-pub-${version}` })
    try {
      pub.send(b.publish({ topic: `qp${version}/0`, payload: 'zero', version }))
      expect(await sub.nextRaw()).toEqual(b.publish({ topic: `qp${version}/0`, payload: 'zero', version }))
      pub.send(b.publish({ topic: `qp${version}/1`, payload: 'one', qos: 1, packetId: 11, version }))
      expect(await pub.nextRaw()).toEqual(b.puback(11, { version }))
      const m1 = await sub.nextOf('publish')
      expect(m1).toMatchObject({ topic: `qp${version}/1`, qos: 1 })
      sub.send(b.puback(m1.messageId!, { version }))
      pub.send(b.publish({ topic: `qp${version}/2`, payload: 'two', qos: 2, packetId: 12, version }))
      expect(await pub.nextRaw()).toEqual(b.pubrec(12, { version }))
      pub.send(b.pubrel(12, { version }))
      expect(await pub.nextRaw()).toEqual(b.pubcomp(12, { version }))
      const m2 = await sub.nextOf('publish')
      expect(m2.cmd === 'publish' && m2.payload.toString()).toBe('two')
      expect(m2).toMatchObject({ qos: 2 })
    } finally {
      pub.q.destroy()
      sub.destroy()
    }
  })

  test('QoS 0, 1 and 2: TCP publisher to a QUIC subscriber', async () => {
    const { c: sub } = await QuicRaw.open({ version, clientId: `q-sub-${version}` })
    const pub = await tcpClient(version, `tcp-pub-${version}`)
    try {
      sub.send(b.subscribe(3, [{ topic: `qs${version}/#`, qos: 2 }], { version }))
      expect(await sub.nextRaw()).toEqual(b.suback(3, [2], { version }))
      pub.send(b.publish({ topic: `qs${version}/0`, payload: 'zero', version }))
      expect(await sub.nextRaw()).toEqual(b.publish({ topic: `qs${version}/0`, payload: 'zero', version }))
      pub.send(b.publish({ topic: `qs${version}/1`, payload: 'one', qos: 1, packetId: 5, version }))
      const m1 = await sub.next()
      expect(m1).toMatchObject({ cmd: 'publish', topic: `qs${version}/1`, qos: 1 })
      sub.send(b.puback(m1.messageId!, { version }))
      pub.send(b.publish({ topic: `qs${version}/2`, payload: 'two', qos: 2, packetId: 6, version }))
      const m2 = await sub.nextOf('publish')
      expect(m2).toMatchObject({ qos: 2, topic: `qs${version}/2` })
      sub.send(b.pubrec(m2.messageId!, { version }))
      expect(await sub.nextRaw()).toEqual(b.pubrel(m2.messageId!, { version }))
      sub.send(b.pubcomp(m2.messageId!, { version }))
      // a large message crosses several QUIC packets and arrives whole
      const big = Buffer.alloc(300_000, 0x61)
      pub.send(b.publish({ topic: `qs${version}/big`, payload: big, version }))
      const m3 = await sub.nextOf('publish')
      expect(m3.cmd === 'publish' && m3.payload.length).toBe(big.length)
    } finally {
      sub.q.destroy()
      pub.destroy()
    }
  })

  test('the will goes out when the QUIC session is torn down without DISCONNECT', async () => {
    const id = `q-will-${version}-${++seq}`
    const watcher = await tcpClient(version, `w-${id}`, `will/${id}`)
    const { c } = await QuicRaw.open({ version, clientId: id, will: { topic: `will/${id}`, payload: 'gone' } })
    c.q.destroy()
    const w = await watcher.nextOf('publish')
    expect(w.cmd === 'publish' && w.payload.toString()).toBe('gone')
    watcher.destroy()
  })

  test('a clean stream end without DISCONNECT is abnormal too: the will goes out', async () => {
    const id = `q-fin-${version}-${++seq}`
    const watcher = await tcpClient(version, `w-${id}`, `will/${id}`)
    const { c } = await QuicRaw.open({ version, clientId: id, will: { topic: `will/${id}`, payload: 'fin' } })
    await c.q.close()
    const w = await watcher.nextOf('publish')
    expect(w.cmd === 'publish' && w.payload.toString()).toBe('fin')
    watcher.destroy()
  })

  test('DISCONNECT then close: no will', async () => {
    const id = `q-clean-${version}-${++seq}`
    const watcher = await tcpClient(version, `w-${id}`, `will/${id}`)
    const { c } = await QuicRaw.open({ version, clientId: id, will: { topic: `will/${id}`, payload: 'no' } })
    c.send(b.disconnect({ version }))
    await c.closed()
    await watcher.expectNothing(300)
    watcher.destroy()
  })

  test('[MQTT-3.3.1-4] PUBLISH with QoS 3 over QUIC is malformed: closed like on TCP, broker keeps serving', async () => {
    const { c } = await QuicRaw.open({ version, clientId: `q-bad-${version}-${++seq}` })
    const bad = b.publish({ topic: 'm/q3', qos: 2, packetId: 1, version })
    bad[0] = 0x36
    c.send(bad)
    if (version === 5) expect(await c.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x81 })
    await c.closed()
    // a new QUIC client still gets through
    const { c: ok } = await QuicRaw.open({ version, clientId: `q-after-${version}-${seq}` })
    ok.q.destroy()
  })
})

test('a second stream is ignored: CONNECT on it gets nothing, the first stream keeps working', async () => {
  const c = await QuicMqttClient.connect('127.0.0.1', quicPort, { ca: certs.ca.cert })
  const id = `q-two-${++seq}`
  const first = new Promise<Uint8Array>((resolve) => { c.ondata = resolve })
  c.write(b.connect({ version: 5, clientId: `${id}-a` }))
  expect((await first)[0]).toBe(0x20)
  // a second bidirectional stream on the same session: refused, and nothing reaches the broker
  const s2 = await c.openExtraStream()
  s2.write(b.connect({ version: 5, clientId: `${id}-b` }))
  expect(await s2.ended).toBe('reset')
  expect(tb.broker.connectionOf(`${id}-b`)).toBeUndefined()
  // the MQTT stream still works
  const ping = new Promise<Uint8Array>((resolve) => { c.ondata = resolve })
  c.write(b.pingreq())
  expect([...await ping]).toEqual([...b.pingresp()])
  expect(tb.broker.connectionOf(`${id}-a`)?.listener).toBe('quic')
  c.destroy()
})

test('idle timeout: tied to the MQTT keepalive', () => {
  expect(quicIdleTimeout(60)).toBe(91)
  expect(quicIdleTimeout(0)).toBe(Math.ceil(65535 * 1.5) + 1)
})

describe('failed handshakes and vanished clients', () => {
  test('wrong ALPN and an untrusted server certificate fail the handshake; the broker keeps serving', async () => {
    logged.length = 0
    await expect(QuicMqttClient.connect('127.0.0.1', quicPort, { ca: certs.ca.cert, alpn: 'h3' })).rejects.toThrow(/no application protocol/)
    await expect(QuicMqttClient.connect('127.0.0.1', quicPort, { ca: certs.otherCa.cert })).rejects.toThrow(/certificate/)
    const { c } = await QuicRaw.open({ version: 5, clientId: `q-after-hs-${++seq}` })
    c.q.destroy()
    expect(logged.some((l) => l.level === 'warn' && l.msg.startsWith('QUIC handshake failed') && String(l.fields.reason).includes('ALPN'))).toBe(true)
    expect(logged.filter((l) => l.level === 'error')).toEqual([])
  })

  test('handshakes aborted and clients killed mid-stream by the dozen do not crash the broker', async () => {
    logged.length = 0
    const watcher = await tcpClient(4, `chaos-w-${++seq}`, 'chaos/#')
    const big = Buffer.alloc(200_000, 0x62)
    const rounds = Array.from({ length: 24 }, async (_, i) => {
      if (i % 3 === 0) {
        // gone before the handshake completes
        const p = QuicMqttClient.connect('127.0.0.1', quicPort, { ca: certs.ca.cert, timeoutMs: 1 })
        await p.then((c) => c.destroy(), () => {})
        return
      }
      const { c } = await QuicRaw.open({ version: 4, clientId: `chaos-${seq}-${i}`, will: { topic: `chaos/${i}`, payload: 'w' } })
      if (i % 3 === 1) {
        // killed in the middle of a large PUBLISH
        c.send(b.publish({ topic: `chaos/${i}/big`, payload: big, qos: 1, packetId: 1 }).subarray(0, 100_000))
        c.q.destroy()
      } else {
        // half a packet, then a clean stream end
        c.send(b.publish({ topic: `chaos/${i}`, payload: 'x' }).subarray(0, 3))
        await c.q.close()
      }
    })
    await Promise.all(rounds)
    // every connected client ends abnormally: 16 wills
    const wills = new Set<string>()
    while (wills.size < 16) {
      const p = await watcher.nextOf('publish')
      if (p.cmd === 'publish' && p.payload.toString() === 'w') wills.add(p.topic)
    }
    const { c } = await QuicRaw.open({ version: 5, clientId: `q-after-chaos-${seq}` })
    c.q.destroy()
    watcher.destroy()
    expect(logged.filter((l) => l.level === 'error')).toEqual([])
  })

  test('a client process killed with SIGKILL: the QUIC idle timeout ends the session and the will goes out', async () => {
    // limits.maxKeepalive 1 => QUIC idle timeout 3 s; a v3.1.1 client with keepalive 0 is not
    // subject to the broker's keepalive, so only the QUIC idle timeout can notice it is gone
    await using b2 = await startBroker(quicEnv(certs, { VMQTT_LIMITS_MAX_KEEPALIVE: '1' }), { log: captureLog })
    const port = b2.broker.portOf('quic')
    const { client: watcher } = await RawClient.open(b2.port, { version: 4, clientId: 'kill-watcher' })
    watcher.send(b.subscribe(1, [{ topic: 'will/killed', qos: 1 }]))
    await watcher.nextOf('suback')
    const code = `
      const { QuicMqttClient } = await import(${JSON.stringify(new URL('../../src/transport/quic-client.ts', import.meta.url).pathname)})
      const c = await QuicMqttClient.connect('127.0.0.1', ${port}, { ca: ${JSON.stringify(certs.ca.cert)}, idleTimeout: 600 })
      c.ondata = (d) => { if (d[0] === 0x20) console.log('connected') }
      c.write(new Uint8Array(${JSON.stringify([...b.connect({ version: 4, clientId: 'killed', keepalive: 0, will: { topic: 'will/killed', payload: 'sigkill' } })])}))
      setInterval(() => {}, 1000)`
    const child = Bun.spawn([process.execPath, '-e', code], { stdout: 'pipe', stderr: 'inherit', env: { ...process.env, NODE_NO_WARNINGS: '1' } })
    const reader = child.stdout.getReader()
    const first = await reader.read()
    expect(new TextDecoder().decode(first.value)).toContain('connected')
    expect(b2.broker.connectionOf('killed')?.listener).toBe('quic')
    const t0 = Date.now()
    child.kill('SIGKILL')
    await child.exited
    const w = await watcher.nextOf('publish', 8000)
    expect(w.cmd === 'publish' && w.payload.toString()).toBe('sigkill')
    // not before the idle timeout (3 s), not much after it
    expect(Date.now() - t0).toBeGreaterThan(quicIdleTimeout(1) * 1000 - 1500)
    watcher.destroy()
  }, 15000)

  test('broker shutdown: a v5 QUIC client gets DISCONNECT 0x8B first', async () => {
    const b2 = await startBroker(quicEnv(certs), { log: captureLog })
    const { c } = await QuicRaw.open({ version: 5, clientId: 'q-shutdown' }, b2.broker.portOf('quic'))
    await b2.close()
    expect(await c.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x8b })
    await c.closed()
  })
})

describe('mutual TLS over QUIC', () => {
  test('clientCert require: a certificate from tls.ca is accepted and its identity used; none or a foreign one fails', async () => {
    await using b2 = await startBroker(quicEnv(certs, { VMQTT_TLS_CA: certs.ca.cert, VMQTT_TLS_CLIENT_CERT: 'require', VMQTT_TLS_IDENTITY: 'cn' }), { log: captureLog })
    const port = b2.broker.portOf('quic')
    await expect(QuicMqttClient.connect('127.0.0.1', port, { ca: certs.ca.cert })).rejects.toThrow(/certificate/)
    await expect(QuicMqttClient.connect('127.0.0.1', port, { ca: certs.ca.cert, ...certs.mallory })).rejects.toThrow(/TLS alert|handshake/)
    const { c } = await QuicRaw.open({ version: 5, clientId: 'mtls-alice' }, port, { ...certs.alice })
    const conn = b2.broker.connectionOf('mtls-alice')!
    expect(conn.socket.peerCertificate?.()).toMatchObject({ cn: 'alice', authorized: true, sans: ['DNS:alice.example', 'email:alice@example.com'] })
    expect(conn.username).toBe('alice')
    c.q.destroy()
  })
})

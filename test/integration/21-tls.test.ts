/**
 * MQTT over TLS and mutual TLS over real sockets, with certificates made by openssl at test time
 * (test/helpers/certs.ts): TLS and TCP clients on one broker, client certificates required,
 * requested or not asked for, the one log line of a refused handshake, the minimum TLS version,
 * the peer certificate as the broker sees it, and certificate reload without a restart.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { X509Certificate } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { copyFile, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { connect as netConnect } from 'node:net'
import * as tls from 'node:tls'
import mqtt, { type MqttClient } from 'mqtt'
import { createBroker } from '../../src/broker/broker.ts'
import { loadConfig } from '../../src/config/load.ts'
import type { Logger } from '../../src/log.ts'
import { makeCerts, type KeyPair, type TestCerts } from '../helpers/certs.ts'
import * as b from '../helpers/packet-builder.ts'
import { startBroker } from '../helpers/start-broker.ts'

type Mode = 'none' | 'request' | 'require'

let certs: TestCerts
let caPem: string
beforeAll(async () => {
  certs = await makeCerts()
  caPem = await readFile(certs.ca.cert, 'utf8')
})
afterAll(async () => { await certs.cleanup() })

const fingerprint = async (file: string) => new X509Certificate(await readFile(file)).fingerprint256

function tlsEnv(mode: Mode, extra: Record<string, string> = {}): Record<string, string> {
  return {
    VMQTT_TLS_HOST: '127.0.0.1', VMQTT_TLS_PORT: '0', VMQTT_TLS_CERT: certs.server.cert, VMQTT_TLS_KEY: certs.server.key,
    VMQTT_TLS_CA: certs.ca.cert, VMQTT_TLS_CLIENT_CERT: mode, ...extra,
  }
}

interface LogLine { level: string; msg: string; fields: Record<string, unknown> }

/** A Logger that keeps every line; waitFor resolves on the first line matching, or rejects after ms. */
function captureLog() {
  const lines: LogLine[] = []
  const wakers = new Set<() => void>()
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push({ level, msg, fields: fields ?? {} })
    for (const w of [...wakers]) w()
  }
  const log: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), enabled: () => true }
  const waitFor = (pred: (l: LogLine) => boolean, what: string, ms = 3000) => new Promise<LogLine>((resolve, reject) => {
    const check = () => {
      const hit = lines.find(pred)
      if (hit === undefined) return
      clearTimeout(timer)
      wakers.delete(check)
      resolve(hit)
    }
    const timer = setTimeout(() => {
      wakers.delete(check)
      reject(new Error(`no log line ${what} within ${ms}ms; lines: ${lines.map((l) => `${l.level} ${l.msg}`).join(' | ')}`))
    }, ms)
    wakers.add(check)
    check()
  })
  const handshakeFailures = () => lines.filter((l) => l.msg.startsWith('TLS handshake failed'))
  return { log, lines, waitFor, handshakeFailures }
}

async function tlsBroker(mode: Mode, extra: Record<string, string> = {}) {
  const cap = captureLog()
  const br = await startBroker(tlsEnv(mode, extra), { log: cap.log })
  return { br, cap, port: br.broker.portOf('mqtts') }
}

/** A TLS client speaking raw MQTT bytes (packet-builder), independent of the broker's code. */
class TlsClient {
  buf = Buffer.alloc(0)
  closed = false
  error = ''
  #wakers = new Set<() => void>()
  constructor(readonly socket: tls.TLSSocket) {
    socket.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.#wake() })
    socket.on('error', (e: Error) => { this.error ||= e.message; this.#wake() })
    socket.on('close', () => { this.closed = true; this.#wake() })
  }

  #wake(): void {
    for (const w of [...this.#wakers]) w()
  }

  /** Resolves when pred() holds, or rejects after ms. */
  until(pred: () => boolean, what: string, ms = 3000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pred()) return
        clearTimeout(timer)
        this.#wakers.delete(check)
        resolve()
      }
      const timer = setTimeout(() => { this.#wakers.delete(check); reject(new Error(`TlsClient: no ${what} within ${ms}ms`)) }, ms)
      this.#wakers.add(check)
      check()
    })
  }

  /** The next `n` received bytes. */
  async take(n: number, what: string): Promise<Buffer> {
    await this.until(() => this.buf.length >= n || this.closed, what)
    if (this.buf.length < n) throw new Error(`TlsClient: closed while waiting for ${what}${this.error ? ` (${this.error})` : ''}`)
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }

  /** PINGREQ answered by PINGRESP: the connection works end to end. */
  async ping(): Promise<void> {
    this.socket.write(Buffer.from([0xc0, 0x00]))
    expect(await this.take(2, 'PINGRESP')).toEqual(Buffer.from([0xd0, 0x00]))
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve()
    this.socket.end()
    return this.until(() => this.closed, 'close').catch(() => { this.socket.destroy() })
  }
}

interface AttemptOpts {
  client?: KeyPair
  version?: 4 | 5
  clientId?: string
  maxVersion?: tls.SecureVersion
}

type Attempt =
  | { ok: true; c: TlsClient; code: number; serverFingerprint: string }
  | { ok: false; error: string }

/**
 * TLS connect, then CONNECT. With TLS 1.3 a client learns that the server refused its
 * certificate only after its own handshake is done, so success means a CONNACK arrived.
 */
async function attempt(port: number, o: AttemptOpts = {}): Promise<Attempt> {
  const socket = tls.connect({
    host: '127.0.0.1', port, ca: caPem, servername: 'localhost', maxVersion: o.maxVersion,
    ...(o.client !== undefined ? { cert: await readFile(o.client.cert), key: await readFile(o.client.key) } : {}),
  })
  const c = new TlsClient(socket)
  let serverFingerprint = ''
  socket.once('secureConnect', () => {
    serverFingerprint = socket.getPeerCertificate().fingerprint256
    socket.write(b.connect({ version: o.version ?? 4, clientId: o.clientId ?? `tls-${Math.random().toString(36).slice(2)}` }))
  })
  await c.until(() => c.buf.length >= 4 || c.closed, 'CONNACK or close')
  if (c.buf.length < 4) return { ok: false, error: c.error || 'closed by the server before CONNACK' }
  const connack = await c.take(4 + (o.version === 5 ? c.buf[1]! - 2 : 0), 'CONNACK')
  expect(connack[0]).toBe(0x20)
  return { ok: true, c, code: connack[3]!, serverFingerprint }
}

async function accepted(port: number, o: AttemptOpts = {}): Promise<{ c: TlsClient; serverFingerprint: string }> {
  const a = await attempt(port, o)
  if (!a.ok) throw new Error(`TLS client refused: ${a.error}`)
  expect(a.code).toBe(0)
  return a
}

describe('MQTT over TLS', () => {
  for (const protocolVersion of [4, 5] as const) {
    test(`v${protocolVersion}: TLS (mqtts://) and TCP clients subscribe and publish to each other`, async () => {
      const { br, port } = await tlsBroker('none')
      await using _ = br
      expect(port).toBeGreaterThan(0)
      expect(port).not.toBe(br.port)
      const tlsOpts = { protocolVersion, reconnectPeriod: 0, ca: caPem }
      const tlsSub = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { ...tlsOpts, clientId: `tls-sub-${protocolVersion}` })
      const tcpSub = await mqtt.connectAsync(br.url, { protocolVersion, reconnectPeriod: 0, clientId: `tcp-sub-${protocolVersion}` })
      const tlsPub = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { ...tlsOpts, clientId: `tls-pub-${protocolVersion}` })
      const tcpPub = await mqtt.connectAsync(br.url, { protocolVersion, reconnectPeriod: 0, clientId: `tcp-pub-${protocolVersion}` })
      try {
        expect(br.broker.connectionOf(`tls-sub-${protocolVersion}`)?.listener).toBe('mqtts')
        expect(br.broker.connectionOf(`tcp-sub-${protocolVersion}`)?.listener).toBe('mqtt')
        const received = (c: MqttClient) => new Promise<string[]>((resolve) => {
          const got: string[] = []
          c.on('message', (t, p) => { got.push(`${t}=${p.toString()}`); if (got.length === 2) resolve(got.sort()) })
        })
        const atTls = received(tlsSub), atTcp = received(tcpSub)
        await tlsSub.subscribeAsync('x/#', { qos: 1 })
        await tcpSub.subscribeAsync('x/#', { qos: 1 })
        await tlsPub.publishAsync('x/from-tls', 'sealed', { qos: 1 })
        await tcpPub.publishAsync('x/from-tcp', 'plain', { qos: 1 })
        const want = ['x/from-tcp=plain', 'x/from-tls=sealed']
        expect(await withTimeout(atTls, 'both messages at the TLS subscriber')).toEqual(want)
        expect(await withTimeout(atTcp, 'both messages at the TCP subscriber')).toEqual(want)
      } finally {
        await Promise.all([tlsSub, tcpSub, tlsPub, tcpPub].map((c) => c.endAsync()))
      }
    })
  }

  test('a plain MQTT client on the TLS port is closed, with one log line saying so', async () => {
    const { br, cap, port } = await tlsBroker('none')
    await using _ = br
    await new Promise<void>((resolve, reject) => {
      const s = netConnect(port, '127.0.0.1', () => s.write(b.connect({ clientId: 'plain' })))
      s.resume() // a paused socket never reports the server's FIN
      s.on('close', () => { clearTimeout(timer); resolve() })
      s.on('error', () => {})
      const timer = setTimeout(() => reject(new Error('the broker kept a plain client open on the TLS port')), 3000)
    })
    const line = await cap.waitFor((l) => l.msg.startsWith('TLS handshake failed'), 'for the plain client')
    expect([line.level, line.msg]).toEqual(['warn', 'TLS handshake failed from 127.0.0.1: not a TLS client (plain MQTT on the TLS port?)'])
  })
})

describe('mutual TLS: clientCert require', () => {
  const refused: [string, () => KeyPair | undefined, string][] = [
    ['no client certificate', () => undefined, 'no client certificate (one is required)'],
    ['a certificate from an unknown CA', () => certs.mallory, 'certificate signed by unknown authority'],
    ['an expired certificate', () => certs.expired, 'certificate has expired'],
  ]
  for (const [what, client, reason] of refused) {
    test(`${what}: refused (CONNACK 5, see 38-tls-refusal) and one warning names the peer and the reason`, async () => {
      const { br, cap, port } = await tlsBroker('require')
      await using _ = br
      const a = await attempt(port, { client: client() })
      expect(a.ok && a.code).toBe(5)
      expect(br.broker.onlineCount).toBe(0)
      await cap.waitFor((l) => l.msg.startsWith('TLS handshake failed'), 'about the refused handshake')
      expect(cap.handshakeFailures().map((l) => [l.level, l.msg, l.fields.remote, l.fields.listener]))
        .toEqual([['warn', `TLS handshake failed from 127.0.0.1: ${reason}`, '127.0.0.1', 'mqtts']])
    })
  }

  for (const version of [4, 5] as const) {
    test(`v${version}: a valid certificate connects; peerCertificate() shows its CN, SANs and fingerprint`, async () => {
      const { br, cap, port } = await tlsBroker('require')
      await using _ = br
      const { c } = await accepted(port, { client: certs.alice, version, clientId: `alice-${version}` })
      try {
        await c.ping()
        expect(br.broker.connectionOf(`alice-${version}`)?.socket.peerCertificate?.()).toEqual({
          cn: 'alice', sans: ['DNS:alice.example', 'email:alice@example.com'], fingerprint: await fingerprint(certs.alice.cert), authorized: true,
        })
        expect(cap.handshakeFailures()).toEqual([])
      } finally {
        await c.close()
      }
    })
  }
})

describe('mutual TLS: clientCert request', () => {
  test('no certificate: the client connects and has no peer certificate', async () => {
    const { br, cap, port } = await tlsBroker('request')
    await using _ = br
    const { c } = await accepted(port, { clientId: 'anon' })
    try {
      const sock = br.broker.connectionOf('anon')?.socket
      expect(sock?.peerCertificate).toBeFunction()
      expect(sock?.peerCertificate?.()).toBeUndefined()
      expect(cap.handshakeFailures()).toEqual([])
    } finally {
      await c.close()
    }
  })

  test('a valid certificate is a verified identity', async () => {
    const { br, port } = await tlsBroker('request')
    await using _ = br
    const { c } = await accepted(port, { client: certs.alice, clientId: 'alice' })
    try {
      expect(br.broker.connectionOf('alice')?.socket.peerCertificate?.()).toMatchObject({ cn: 'alice', authorized: true })
    } finally {
      await c.close()
    }
  })

  // like Mosquitto with require_certificate false: a certificate that does not verify fails the
  // handshake instead of connecting as if none had been sent
  test('a certificate from an unknown CA is refused (never an identity), with one warning', async () => {
    const { br, cap, port } = await tlsBroker('request')
    await using _ = br
    const a = await attempt(port, { client: certs.mallory, clientId: 'mallory' })
    expect(a.ok && a.code).toBe(5)
    expect(br.broker.connectionOf('mallory')).toBeUndefined()
    await cap.waitFor((l) => l.msg.startsWith('TLS handshake failed'), 'about mallory')
    expect(cap.handshakeFailures().map((l) => l.msg)).toEqual(['TLS handshake failed from 127.0.0.1: certificate signed by unknown authority'])
  })
})

describe('clientCert none', () => {
  test('no certificate is asked for: the socket shows none', async () => {
    const { br, port } = await tlsBroker('none')
    await using _ = br
    const { c } = await accepted(port, { client: certs.alice, clientId: 'alice' })
    try {
      expect(br.broker.connectionOf('alice')?.socket.peerCertificate?.()).toBeUndefined()
    } finally {
      await c.close()
    }
  })
})

describe('minimum TLS version', () => {
  test('TLSv1.3 minimum refuses a TLSv1.2-only client with a warning; a TLSv1.3 client connects', async () => {
    const { br, cap, port } = await tlsBroker('none', { VMQTT_TLS_MIN_VERSION: 'TLSv1.3' })
    await using _ = br
    const old = await attempt(port, { maxVersion: 'TLSv1.2' })
    expect(old.ok).toBe(false)
    const line = await cap.waitFor((l) => l.msg.startsWith('TLS handshake failed'), 'about the TLSv1.2 client')
    expect(line.msg).toBe('TLS handshake failed from 127.0.0.1: TLS version not accepted (minimum TLSv1.3)')
    const { c } = await accepted(port)
    expect(c.socket.getProtocol()).toBe('TLSv1.3')
    await c.close()
  })

  test('TLSv1.2 minimum (the default) accepts a TLSv1.2-only client', async () => {
    const { br, port } = await tlsBroker('none')
    await using _ = br
    const { c } = await accepted(port, { maxVersion: 'TLSv1.2' })
    expect(c.socket.getProtocol()).toBe('TLSv1.2')
    await c.close()
  })
})

describe('certificate reload', () => {
  /** A broker whose server certificate files are copies it owns, so the test can replace them. */
  async function reloadable(name: string) {
    const live = { cert: certs.path(`${name}-live.pem`), key: certs.path(`${name}-live.key`) }
    await copyFile(certs.server.cert, live.cert)
    await copyFile(certs.server.key, live.key)
    const t = await tlsBroker('require', { VMQTT_TLS_CERT: live.cert, VMQTT_TLS_KEY: live.key })
    return { ...t, live }
  }

  test('new connections get the new certificate while open ones stay up', async () => {
    const { br, cap, port, live } = await reloadable('swap')
    await using _ = br
    const before = await accepted(port, { client: certs.alice, clientId: 'before' })
    try {
      expect(before.serverFingerprint).toBe(await fingerprint(certs.server.cert))
      const next = await certs.issue('server-next', { cn: 'localhost', sans: ['IP:127.0.0.1', 'DNS:localhost'], usage: 'serverAuth' })
      await copyFile(next.cert, live.cert)
      await copyFile(next.key, live.key)
      await br.broker.reloadTls()
      expect(br.broker.portOf('mqtts')).toBe(port)
      await cap.waitFor((l) => l.msg === 'tls certificates reloaded', 'about the reload')
      const after = await accepted(port, { client: certs.alice, clientId: 'after' })
      try {
        expect(after.serverFingerprint).toBe(await fingerprint(next.cert))
        expect(after.serverFingerprint).not.toBe(before.serverFingerprint)
        await before.c.ping()
        await after.c.ping()
        // the old connection still carries messages: it subscribes, the new one publishes
        before.c.socket.write(b.subscribe(1, [{ topic: 'reload/t', qos: 0 }]))
        expect((await before.c.take(5, 'SUBACK'))[0]).toBe(0x90)
        after.c.socket.write(b.publish({ topic: 'reload/t', payload: 'hi', qos: 0 }))
        expect(await before.c.take(b.publish({ topic: 'reload/t', payload: 'hi', qos: 0 }).length, 'PUBLISH'))
          .toEqual(b.publish({ topic: 'reload/t', payload: 'hi', qos: 0 }))
      } finally {
        await after.c.close()
      }
    } finally {
      await before.c.close()
    }
  })

  test('an invalid file at reload throws naming it; the old certificate stays in use', async () => {
    const { br, port, live } = await reloadable('bad')
    await using _ = br
    const old = await fingerprint(certs.server.cert)
    await writeFile(live.cert, 'not a certificate\n')
    await expect(br.broker.reloadTls()).rejects.toThrow(`TLS certificate file ${live.cert}: no PEM certificate in it`)
    // a key that belongs to another certificate
    await copyFile(certs.server.cert, live.cert)
    await copyFile(certs.alice.key, live.key)
    await expect(br.broker.reloadTls()).rejects.toThrow(`TLS key file ${live.key} does not belong to the certificate in ${live.cert}`)
    const { c, serverFingerprint } = await accepted(port, { client: certs.alice })
    expect(serverFingerprint).toBe(old)
    await c.ping()
    await c.close()
  })
})

describe('start-up errors', () => {
  async function startError(env: Record<string, string>): Promise<string> {
    const config = loadConfig({ env: {
      VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off', VMQTT_LOG_LEVEL: 'silent',
      VMQTT_SYS_INTERVAL: '0', VMQTT_DATA_STORE: 'memory', ...env,
    } })
    const broker = createBroker(config)
    try {
      await broker.start()
    } catch (e) {
      return (e as Error).message
    } finally {
      await broker.close()
    }
    throw new Error('the broker started')
  }

  test('a missing certificate file is an error naming the file', async () => {
    const missing = certs.path('missing.pem')
    expect(await startError(tlsEnv('none', { VMQTT_TLS_CERT: missing }))).toBe(`TLS certificate file ${missing}: cannot read it (no such file)`)
  })

  test('a key file that is not a key is an error naming the file', async () => {
    expect(await startError(tlsEnv('none', { VMQTT_TLS_KEY: certs.ca.cert }))).toStartWith(`TLS key file ${certs.ca.cert}: not a valid unencrypted PEM private key`)
  })

  test('client certificates without a CA file are refused at start', async () => {
    expect(await startError(tlsEnv('require', { VMQTT_TLS_CA: '' }))).toContain('tls.ca must name the CA file')
  })
})

function withTimeout<T>(p: Promise<T>, what: string, ms = 3000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms) })
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}

describe('certificate identity as the username (VMQTT_TLS_IDENTITY)', () => {
  const opts = (who: KeyPair | null, protocolVersion: 4 | 5, extra: Record<string, unknown> = {}) => ({
    ca: caPem, rejectUnauthorized: true, protocolVersion, reconnectPeriod: 0, connectTimeout: 3000,
    ...(who !== null ? { cert: readFileSync(who.cert), key: readFileSync(who.key) } : {}), ...extra,
  })
  for (const protocolVersion of [4, 5] as const) {
    test(`v${protocolVersion}: cn maps alice's certificate to username alice; %u rules follow; a different CONNECT username and no certificate are refused`, async () => {
      const acl = join(certs.dir, `identity-${protocolVersion}.acl`)
      writeFileSync(acl, 'allow all all users/%u/#\n')
      const { br, port } = await tlsBroker('request', { VMQTT_TLS_IDENTITY: 'cn', VMQTT_ACL_FILE: acl })
      try {
        const alice = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, opts(certs.alice, protocolVersion, { clientId: `id-${protocolVersion}` }))
        try {
          expect(br.broker.connectionOf(`id-${protocolVersion}`)?.username).toBe('alice')
          const granted = await alice.subscribeAsync('users/alice/#', { qos: 0 })
          expect(granted.map((g) => g.qos)).toEqual([0])
          // MQTT.js turns a refusing SUBACK (v5 0x87, v3 0x80) into a rejection
          await expect(alice.subscribeAsync('users/bob/#', { qos: 0 })).rejects.toThrow(protocolVersion === 5 ? /Not authorized/ : /Unspecified error/)
        } finally {
          await alice.endAsync()
        }
        // the certificate names the user: claiming another username is refused
        const liar = mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, opts(certs.alice, protocolVersion, { username: 'bob', clientId: `liar-${protocolVersion}` }))
        await expect(liar).rejects.toThrow()
        // no certificate and no credentials: an authenticator is configured, so anonymous is off
        const anon = mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, opts(null, protocolVersion, { clientId: `anon-${protocolVersion}` }))
        await expect(anon).rejects.toThrow(/authori[sz]ed|Not authorized|5/i)
      } finally {
        await br.close()
      }
    })
  }

  test('san maps the first DNS/email/URI subject alternative name', async () => {
    const { br, port } = await tlsBroker('require', { VMQTT_TLS_IDENTITY: 'san' })
    try {
      const c = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, opts(certs.alice, 5, { clientId: 'san-1' }))
      try {
        expect(br.broker.connectionOf('san-1')?.username).toBe('alice.example')
      } finally {
        await c.endAsync()
      }
    } finally {
      await br.close()
    }
  })
})

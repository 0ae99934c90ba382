import { createPrivateKey, type KeyObject, type X509Certificate } from 'node:crypto'
import type { QuicEndpoint, QuicSession, QuicStream } from 'node:quic'
import { loadQuic } from './node-quic.ts'
import { readPem, splitSans, type TlsFiles } from './tls.ts'
import type { PeerCertificate } from '../auth/types.ts'
import type { Logger } from '../log.ts'
import type { Accept, ConnectionSink, Listener, MqttSocket } from './types.ts'

/** PEM files as for the TLS listener; clientCert none: no certificate asked; request and require
 * both require one: node:quic (Bun 1.4.4) either asks and fails the handshake without one, or
 * does not ask at all. */
export interface QuicListenOptions extends TlsFiles {
  /** limits.maxKeepalive (s, 0 = no cap): the QUIC idle timeout is derived from it (quicIdleTimeout). */
  maxKeepalive: number
  /** Bytes received on the MQTT stream but not processed yet before the connection is closed (0 = no cap). */
  maxUnreadBytes: number
  log: Logger
}

/** The writer's "tell me when I may write again" hook (node:stream/iter; not a module in Bun 1.4.4). */
const DRAINABLE = Symbol.for('Stream.drainableProtocol')
type Writer = QuicStream['writer'] & { [DRAINABLE](): Promise<boolean> | null }
/** How long a closing session may take to flush before it is torn down. */
const CLOSE_GRACE_MS = 5000
/** QUIC application error code for streams other than the MQTT stream (H3_NO_ERROR-like: "not wanted"). */
const STREAM_REFUSED = 0x10

/**
 * QUIC idle timeout (s). The broker closes a client after 1.5 x its keepalive without a packet
 * [MQTT-3.1.2-22]; QUIC must not drop a live client earlier, so the idle timeout is 1.5 x the
 * largest keepalive the broker grants (limits.maxKeepalive, else 65535) plus a second. A dead
 * peer then ends like any silent client: the idle timeout closes the session, the stream ends
 * without DISCONNECT, and the will is published.
 */
export function quicIdleTimeout(maxKeepalive: number): number {
  return Math.ceil((maxKeepalive > 0 ? maxKeepalive : 65535) * 1.5) + 1
}

/**
 * MQTT over QUIC (listener "quic") on node:quic: ALPN "mqtt", TLS 1.3, one MQTT connection per
 * QUIC session on the first client-initiated bidirectional stream (EMQX's single-stream mode);
 * other streams are refused. No 0-RTT: early data could be replayed (a PUBLISH twice).
 */
export async function listenQuic(opts: QuicListenOptions, accept: Accept): Promise<Listener> {
  const { host, log } = opts
  if (opts.clientCert === 'request') {
    log.warn('quic: tls.clientCert request acts as require over QUIC (node:quic cannot ask for an optional client certificate)', { listener: 'quic' })
  }
  const ids = loadIdentity(opts)
  const address = host.includes(':') ? `[${host}]:${opts.port}` : `${host}:${opts.port}`
  let endpoint: QuicEndpoint
  try {
    const { listen } = await loadQuic()
    endpoint = await listen((session) => {
      try {
        new QuicConnection(session, opts, accept)
      } catch (e) {
        log.error('quic: session setup failed', { error: String((e as Error)?.stack ?? e) })
        try { session.destroy() } catch { /* gone */ }
      }
    }, {
      endpoint: { address, maxConnectionsPerHost: 0, maxConnectionsTotal: 65535 },
      alpn: ['mqtt'],
      sni: { '*': ids },
      ...(opts.ca !== '' ? { ca: [Buffer.from(readPem('CA', opts.ca))] } : {}),
      verifyClient: opts.clientCert !== 'none',
      enableEarlyData: false,
      transportParams: { maxIdleTimeout: quicIdleTimeout(opts.maxKeepalive), initialMaxStreamsUni: 0 },
      // marks the session's promises handled before onsession runs: a failed handshake never
      // becomes an unhandled rejection (QuicConnection replaces it)
      onerror() {},
    })
  } catch (e) {
    throw new Error(`QUIC listener on ${address}: ${(e as Error).message}`)
  }
  endpoint.closed.catch((e: unknown) => log.error('quic: endpoint failed', { listener: 'quic', error: (e as Error).message }))
  const port = endpoint.address?.port ?? opts.port
  let stopping = false
  return {
    name: 'quic',
    host,
    port,
    stop(force = false) {
      if (!stopping) {
        stopping = true
        try { endpoint.busy = true } catch { /* closing */ }
      }
      if (!force) return
      // sessions the broker just ended still flush (DISCONNECT 0x8B): close gracefully, then tear down
      try {
        endpoint.close().catch(() => {})
        setTimeout(() => { try { endpoint.destroy() } catch { /* gone */ } }, CLOSE_GRACE_MS).unref()
      } catch { /* closed */ }
    },
    reload() {
      const next = loadIdentity(opts)
      endpoint.setSNIContexts({ '*': next }, { replace: true })
      log.info('tls certificates reloaded', { listener: 'quic', cert: opts.cert })
    },
  }
}

/** One QUIC session: the MqttSocket the broker writes to, fed from the session's MQTT stream. */
class QuicConnection implements MqttSocket {
  readonly #session: QuicSession
  readonly #opts: QuicListenOptions
  readonly #accept: Accept
  #stream: QuicStream | null = null
  #writer: Writer | null = null
  #sink: ConnectionSink | null = null
  #remote: string | undefined
  #handshaken = false
  #draining = false
  #ended = false
  #cert: X509Certificate | null | undefined

  constructor(session: QuicSession, opts: QuicListenOptions, accept: Accept) {
    this.#session = session
    this.#opts = opts
    this.#accept = accept
    session.onerror = (e: unknown) => this.#failed(e)
    session.onhandshake = (info) => {
      this.#handshaken = true
      this.#remote = info.remote?.address
    }
    session.onstream = (stream) => this.#onStream(stream)
    session.closed.then(() => this.#gone(), () => this.#gone())
  }

  get remoteAddress(): string {
    return this.#remote ?? ''
  }

  peerCertificate?(): PeerCertificate | undefined

  write(data: Uint8Array): number {
    const w = this.#writer
    if (w === null || this.#ended) return data.length // closed: the bytes go nowhere, as on a closed TCP socket
    try {
      if (w.writeSync(data)) return data.length
    } catch {
      return data.length
    }
    this.#awaitDrain(w)
    return 0
  }

  end(): void {
    if (this.#ended) return
    this.#ended = true
    const w = this.#writer
    if (w !== null) {
      try {
        // FIN after what is queued; with a drain pending, end() waits for it
        if (w.endSync() < 0) w.end().catch(() => {})
      } catch { /* stream gone */ }
    }
    this.#closeSession()
  }

  #awaitDrain(w: Writer): void {
    if (this.#draining) return
    let p: Promise<boolean> | null
    try { p = w[DRAINABLE]() } catch { return }
    if (p === null) return
    this.#draining = true
    p.then(() => {
      this.#draining = false
      if (!this.#ended) this.#sink?.drain()
    }, () => { this.#draining = false })
  }

  #onStream(stream: QuicStream): void {
    stream.closed.catch(() => {})
    if (this.#stream !== null || this.#ended || stream.direction !== 'bidi') {
      // single-stream mode: only the first client-initiated bidirectional stream carries MQTT
      try { stream.destroy(undefined, { code: STREAM_REFUSED }) } catch { /* gone */ }
      return
    }
    this.#stream = stream
    stream.onerror = () => {}
    this.#writer = stream.writer as Writer
    if (this.#handshaken) this.#start(stream)
    else this.#session.opened.then((info) => { this.#remote ??= info.remote?.address; this.#start(stream) }, () => this.#gone())
  }

  #start(stream: QuicStream): void {
    if (this.#ended) return
    if (this.#opts.clientCert !== 'none') this.peerCertificate = peerCertificate
    try {
      this.#sink = this.#accept(this, 'quic')
    } catch (e) {
      this.#opts.log.error('quic: accept failed', { error: String((e as Error)?.stack ?? e) })
      this.end()
      return
    }
    void this.#read(stream)
  }

  async #read(stream: QuicStream): Promise<void> {
    const cap = this.#opts.maxUnreadBytes
    let consumed = 0
    try {
      for await (const batch of stream) {
        for (const c of batch) {
          consumed += c.byteLength
          // each chunk has its own ArrayBuffer that node:quic never touches again: no copy
          this.#sink?.data(Buffer.from(c.buffer, c.byteOffset, c.byteLength))
        }
        if (this.#sink === null) break
        // node:quic grants flow-control credit whether or not we read (no receive-side
        // backpressure): what arrived and is not processed yet is held in memory, so cap it
        if (cap > 0 && Number(stream.stats.bytesReceived) - consumed > cap) {
          this.#opts.log.warn('closing connection: unprocessed QUIC input over the cap', {
            listener: 'quic', remote: this.#remote, unread: Number(stream.stats.bytesReceived) - consumed, cap,
          })
          break
        }
      }
    } catch {
      // stream reset by the peer, or destroyed with its session
    }
    // the stream ended (FIN, reset, idle timeout, session gone) without the broker ending it: to
    // the broker this is an abnormal close, so a will is published unless DISCONNECT came first
    this.#gone()
  }

  /** The connection is over: tell the broker (once) and release the session. */
  #gone(): void {
    const sink = this.#sink
    this.#sink = null
    if (sink !== null) {
      try { sink.close() } catch (e) { this.#opts.log.error('quic: close handler failed', { error: String((e as Error)?.stack ?? e) }) }
    }
    if (!this.#ended) this.end()
  }

  #closeSession(): void {
    const s = this.#session
    if (s.destroyed) return
    try {
      s.close().catch(() => {})
      // a peer that never acknowledges (gone, or not reading) does not hold the session forever
      setTimeout(() => { if (!s.destroyed) try { s.destroy() } catch { /* gone */ } }, CLOSE_GRACE_MS).unref()
    } catch {
      try { s.destroy() } catch { /* gone */ }
    }
  }

  #failed(e: unknown): void {
    const msg = (e as Error)?.message ?? String(e)
    if (!this.#handshaken) {
      // refused handshakes (wrong ALPN, no or untrusted client certificate, client distrusts us)
      this.#opts.log.warn(`QUIC handshake failed: ${handshakeReason(msg)}`, { listener: 'quic', reason: handshakeReason(msg), error: msg })
    } else {
      this.#opts.log.debug('quic: session error', { listener: 'quic', remote: this.#remote, error: msg })
    }
  }

  get certificate(): X509Certificate | undefined {
    if (this.#cert === undefined) {
      try { this.#cert = this.#session.peerCertificate ?? null } catch { this.#cert = null }
    }
    return this.#cert ?? undefined
  }
}

/** MqttSocket.peerCertificate on listeners that ask for client certificates. */
function peerCertificate(this: QuicConnection): PeerCertificate | undefined {
  const c = this.certificate
  if (c === undefined) return undefined
  const cn = /^CN=(.*)$/m.exec(c.subject)?.[1]
  return {
    cn,
    sans: splitSans(c.subjectAltName),
    fingerprint: c.fingerprint256,
    // node:quic fails the handshake for a certificate that does not chain to tls.ca
    authorized: true,
  }
}

function handshakeReason(msg: string): string {
  if (msg.includes('no application protocol')) return 'no ALPN protocol in common (the client must offer "mqtt")'
  if (msg.includes('peer did not provide a certificate')) return 'no client certificate (one is required)'
  if (msg.includes('handshake failed')) return 'TLS handshake failed (client certificate not signed by tls.ca?)'
  if (/transport error 29[0-9]/.test(msg)) return 'the client refused the handshake (does it trust the server certificate?)'
  return msg
}

/** The server identity from tls.cert / tls.key; errors name the file. */
function loadIdentity(o: QuicListenOptions): { keys: KeyObject[]; certs: Buffer[] } {
  if (o.clientCert !== 'none' && o.ca === '') throw new Error(`tls.ca must name the CA file that client certificates chain to when tls.clientCert is ${o.clientCert}`)
  const cert = Buffer.from(readPem('certificate', o.cert))
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`TLS certificate file ${o.cert}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)`)
  const keyText = readPem('key', o.key)
  let key: KeyObject
  try {
    key = createPrivateKey(keyText)
  } catch (e) {
    throw new Error(`TLS key file ${o.key}: not a valid unencrypted PEM private key (${(e as Error).message})`)
  }
  return { keys: [key], certs: [cert] }
}

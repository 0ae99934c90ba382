import { createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { QuicSession, QuicStream } from 'node:quic'
import { loadQuic } from './node-quic.ts'
import { Duplex } from 'node:stream'

export interface QuicClientOptions {
  /** PEM (text or file path) of the CA that signed the server certificate. */
  ca?: string
  /** Client certificate and key (PEM text or file paths), for mutual TLS. */
  cert?: string
  key?: string
  /** ALPN protocol offered (default "mqtt"). */
  alpn?: string
  /** TLS server name (default: host when it is a name, else "localhost"). */
  servername?: string
  /** QUIC idle timeout (s) this side announces; the session uses the smaller of both sides'.
   * Default 3600: node:quic's own default (10 s) would drop any client silent for 10 s, e.g. one
   * whose MQTT keepalive is longer than that. Liveness is the MQTT keepalive's job. */
  idleTimeout?: number
  /** Share one local endpoint (UDP socket) with other clients that share (default: one per client). */
  sharedEndpoint?: boolean
  /** Gives up when the handshake has not completed after this many ms (default 5000). */
  timeoutMs?: number
}

const DRAINABLE = Symbol.for('Stream.drainableProtocol')
type Writer = QuicStream['writer'] & { [DRAINABLE](): Promise<boolean> | null }

/**
 * A small MQTT-over-QUIC client (tests, `vmqtt bench --quic`): one QUIC session with its own
 * endpoint, MQTT bytes on one bidirectional stream. Bytes in go to `ondata`; `onclose` runs once
 * when the stream or session ends (error set when it failed).
 */
export class QuicMqttClient {
  ondata: (chunk: Uint8Array) => void = () => {}
  onclose: (error?: Error) => void = () => {}
  ondrain: () => void = () => {}
  readonly #session: QuicSession
  readonly #stream: QuicStream
  readonly #writer: Writer
  /** Bytes the stream did not accept yet, written on drain. */
  #queue: Uint8Array[] = []
  #draining = false
  #closed = false

  private constructor(session: QuicSession, stream: QuicStream) {
    this.#session = session
    this.#stream = stream
    this.#writer = stream.writer as Writer
    stream.onerror = () => {}
    stream.closed.catch(() => {})
    session.closed.then(() => this.#end(), (e: unknown) => this.#end(e as Error))
    void this.#read()
  }

  /** Connects (handshake included) and opens the MQTT stream. Rejects with the QUIC/TLS error. */
  static async connect(host: string, port: number, opts: QuicClientOptions = {}): Promise<QuicMqttClient> {
    const v6 = host.includes(':')
    const pem = (v: string | undefined) => (v === undefined ? undefined : v.includes('-----BEGIN') ? Buffer.from(v) : readFileSync(v))
    const ca = pem(opts.ca), cert = pem(opts.cert), key = pem(opts.key)
    const isName = /[a-z]/i.test(host) && !v6
    let failure: Error | undefined
    const { connect: quicConnect } = await loadQuic()
    const session = await quicConnect(v6 ? `[${host}]:${port}` : `${host}:${port}`, {
      alpn: opts.alpn ?? 'mqtt',
      servername: opts.servername ?? (isName ? host : 'localhost'),
      // an endpoint of the server's address family (node:quic needs [::1]:0 to reach ::1); a
      // separate one per client unless shared (one UDP socket for many clients, as in bench)
      // idleTimeout: the endpoint (its UDP socket) goes 1 s after its last session; without it
      // node:quic keeps every client endpoint open for the life of the process
      endpoint: { address: v6 ? (host === '::1' ? '[::1]:0' : '[::]:0') : host.startsWith('127.') ? '127.0.0.1:0' : '0.0.0.0:0', idleTimeout: 1 },
      reuseEndpoint: opts.sharedEndpoint === true,
      ...(ca !== undefined ? { ca: [ca] } : {}),
      ...(cert !== undefined && key !== undefined ? { certs: [cert], keys: [createPrivateKey(key)] } : {}),
      transportParams: { maxIdleTimeout: opts.idleTimeout ?? 3600 },
      onerror(e: unknown) { failure ??= e as Error },
    })
    const ms = opts.timeoutMs ?? 5000
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([
        session.opened,
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`QUIC handshake with ${host}:${port} did not complete within ${ms} ms`)), ms) }),
      ])
    } catch (e) {
      closeQuietly(session)
      throw failure ?? e
    } finally {
      clearTimeout(timer)
    }
    const stream = await session.createBidirectionalStream()
    return new QuicMqttClient(session, stream)
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Sends bytes (copied by the stream). False when they were queued behind flow control (see ondrain). */
  write(bytes: Uint8Array): boolean {
    if (this.#closed) return false
    if (this.#queue.length === 0) {
      try {
        if (this.#writer.writeSync(bytes)) return true
      } catch {
        return false
      }
    }
    this.#queue.push(bytes)
    this.#waitDrain()
    return false
  }

  /**
   * Ends the stream (FIN) and closes the session gracefully; destroys it when that has not
   * finished within graceMs (a writer waiting for a drain, or a peer that does not answer).
   */
  async close(graceMs = 3000): Promise<void> {
    if (this.#closed && this.#session.destroyed) return
    const graceful = (async () => {
      try { if (this.#writer.endSync() < 0) await this.#writer.end() } catch { /* gone */ }
      try { await this.#session.close() } catch { /* closed with an error */ }
    })()
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([graceful, new Promise((resolve) => { timer = setTimeout(resolve, graceMs) })])
    clearTimeout(timer)
    if (!this.#session.destroyed) this.destroy()
  }

  /**
   * Opens another bidirectional stream on the session (for tests of the broker's single-stream
   * mode): `ended` tells whether the server ended it with FIN or reset it.
   */
  async openExtraStream(): Promise<{ write(bytes: Uint8Array): boolean; ended: Promise<'fin' | 'reset'> }> {
    const s = await this.#session.createBidirectionalStream()
    s.onerror = () => {}
    s.closed.catch(() => {})
    const w = s.writer
    const ended = (async (): Promise<'fin' | 'reset'> => {
      try {
        for await (const _ of s) { /* discard */ }
        return 'fin'
      } catch {
        return 'reset'
      }
    })()
    return { write: (bytes) => { try { return w.writeSync(bytes) } catch { return false } }, ended }
  }

  /** Tears the session down at once (the server sees CONNECTION_CLOSE, no FIN on the stream). */
  destroy(): void {
    try { this.#session.destroy() } catch { /* gone */ }
  }

  #waitDrain(): void {
    if (this.#draining) return
    const p = this.#writer[DRAINABLE]()
    if (p === null) { queueMicrotask(() => this.#flushQueue()); return }
    this.#draining = true
    p.then(() => { this.#draining = false; this.#flushQueue() }, () => { this.#draining = false })
  }

  #flushQueue(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      let ok: boolean
      try { ok = this.#writer.writeSync(this.#queue[0]!) } catch { return }
      if (!ok) { this.#waitDrain(); return }
      this.#queue.shift()
    }
    if (!this.#closed) this.ondrain()
  }

  async #read(): Promise<void> {
    let error: Error | undefined
    try {
      for await (const batch of this.#stream) for (const c of batch) this.ondata(c)
    } catch (e) {
      error = e as Error
    }
    this.#end(error)
    closeQuietly(this.#session)
  }

  #end(error?: Error): void {
    if (this.#closed) return
    this.#closed = true
    this.#queue = []
    try { this.onclose(error) } catch { /* the caller's handler */ }
  }
}

/**
 * The client as a Node.js Duplex (for libraries that take a stream, e.g. MQTT.js's MqttClient
 * with a stream builder). destroy() tears the session down (an abnormal close for the broker).
 */
export function quicDuplex(c: QuicMqttClient): Duplex {
  let ended = false
  const d = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      if (c.write(chunk)) cb()
      else c.ondrain = () => { c.ondrain = () => {}; cb() }
    },
    final(cb) { c.close().then(() => cb(), () => cb()) },
    destroy(err, cb) { c.destroy(); cb(err) },
  })
  c.ondata = (chunk) => d.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
  c.onclose = () => {
    if (ended) return
    ended = true
    d.push(null)
    d.destroy()
  }
  return d
}

function closeQuietly(session: QuicSession): void {
  try {
    if (!session.destroyed) session.close().catch(() => {})
  } catch { /* gone */ }
}

import { isIP } from 'node:net'
import type { Server, ServerWebSocket } from 'bun'
import type { Logger } from '../log.ts'
import type { Accept, ConnectionSink, Listener, MqttSocket } from './types.ts'
import { trustedProxies, unmapIPv4 } from './proxy-protocol.ts'
import { readPem } from './tls.ts'

export interface WsListenOptions {
  host: string
  port: number
  /** URL path that takes MQTT upgrades (e.g. /mqtt). */
  path: string
  /** Largest MQTT packet accepted: WebSocket messages may be a little larger (framing slack). */
  maxPacketSize: number
  /** IPs or CIDRs whose X-Forwarded-For header names the client; empty = the TCP peer is the client. */
  trustedProxies: readonly string[]
  /** Every other path goes here (the admin app, for a single-port gateway); without it: 404. */
  adminFetch?: (req: Request, server: Server<WsSocket>) => Response | Promise<Response>
  /** Secure WebSocket (listener "wss") with the tls.* files; without it plain ws. */
  tls?: WssOptions
  log: Logger
}

export interface WssOptions {
  cert: string
  key: string
  ca: string
  clientCert: 'none' | 'request' | 'require'
  minVersion: 'TLSv1.2' | 'TLSv1.3'
}

/** Subprotocols accepted, as MQTT 5 (section 6) and 3.1.1 name them; 3.1 clients send mqttv3.1. */
const SUBPROTOCOLS = new Set(['mqtt', 'mqttv3.1'])
/**
 * Bytes Bun may hold unsent for one connection before write() refuses more: the Connection
 * then keeps the rest in its own backlog (counted against limits.maxPendingBytes) and retries
 * on drain. Bun itself would buffer up to backpressureLimit (16 MiB) and then drop messages.
 */
export const WS_HIGH_WATER = 1024 * 1024
/** Room for the MQTT fixed header around a packet of maxPacketSize in one message. */
const FRAME_SLACK = 1024
const VERSION = { 'TLSv1.2': 0x0303, 'TLSv1.3': 0x0304 } as const
/** Bun 1.4.4 honours minVersion (a protocol version number) on Bun.serve but does not declare it. */
type TlsOptions = Bun.TLSOptions & { minVersion: number }

/**
 * One MQTT-over-WebSocket connection, stored in Bun's ws.data: the only object allocated per
 * connection. Created at upgrade (with the client address), bound to its socket on open.
 */
export class WsSocket implements MqttSocket {
  readonly remoteAddress: string
  #ws: ServerWebSocket<WsSocket> | null = null
  sink: ConnectionSink | null = null

  constructor(remoteAddress: string) {
    this.remoteAddress = remoteAddress
  }

  bind(ws: ServerWebSocket<WsSocket>): void {
    this.#ws = ws
  }

  /** One MQTT write is one binary message: all of it is accepted, or none (Bun is holding enough). */
  write(data: Uint8Array): number {
    const ws = this.#ws
    if (ws === null || ws.getBufferedAmount() > WS_HIGH_WATER) return 0
    // -1: queued under backpressure (Bun holds it, drain follows); 0: dropped (closed socket)
    return ws.send(data) === 0 ? 0 : data.length
  }

  /** Bytes Bun holds unsent for this connection. */
  get bufferedAmount(): number {
    return this.#ws?.getBufferedAmount() ?? 0
  }

  /** Closes after what is buffered; a client that stopped reading would never see the close frame, so it is cut off. */
  end(): void {
    const ws = this.#ws
    if (ws === null) return
    if (ws.getBufferedAmount() > WS_HIGH_WATER) ws.terminate()
    else ws.close(1000)
  }

  /** Sends a close frame with a reason after what is buffered; Bun reads (and the closed
   * Connection discards) until the client answers it or terminate() after lingering. */
  shutdown(): void {
    const ws = this.#ws
    if (ws === null) return
    if (ws.getBufferedAmount() > WS_HIGH_WATER) ws.terminate()
    else ws.close(1000, 'MQTT connection closed by the server')
  }

  terminate(): void {
    this.#ws?.terminate()
  }

  /** The socket closed: the Connection hears it once. */
  closed(): void {
    const sink = this.sink
    this.sink = null
    this.#ws = null
    sink?.close()
  }
}

/**
 * MQTT over WebSocket (listener "ws") and secure WebSocket ("wss") on Bun.serve. Upgrades on
 * `path` when the client offers subprotocol mqtt or mqttv3.1; other requests on that path get
 * 400, other paths the admin app (when given) or 404. Binary messages are bytes of the MQTT
 * stream (a packet may span messages, a message may hold several packets: the framer copes).
 *
 * Limits of Bun.serve 1.4.4 (oven-sh/bun#14097): no access to the client certificate. With
 * clientCert require the handshake refuses clients without a certificate from tls.ca, but the
 * broker cannot read it (no certificate identity on wss); request would accept unverified
 * certificates unseen, so it asks for none. Failed handshakes are not reported (no log line).
 * Certificate reload starts a second server on the port (SO_REUSEPORT), as listenTls does:
 * server.reload() ignores `tls`.
 */
export function listenWs(opts: WsListenOptions, accept: Accept): Listener {
  const name = opts.tls === undefined ? 'ws' : 'wss'
  const clientOf = clientAddress(opts.trustedProxies)
  const { path, adminFetch } = opts
  const serve = (port: number, tls: TlsOptions | undefined): Server<WsSocket> => {
    try {
      return Bun.serve<WsSocket>({
        hostname: opts.host, port, reusePort: tls !== undefined, ...(tls !== undefined ? { tls } : {}),
        fetch(req, server) {
          const url = new URL(req.url)
          if (url.pathname !== path) return adminFetch !== undefined ? adminFetch(req, server) : new Response('not found\n', { status: 404 })
          const protocol = pickSubprotocol(req.headers.get('sec-websocket-protocol'))
          if (protocol === null) return new Response('MQTT over WebSocket needs subprotocol mqtt (or mqttv3.1)\n', { status: 400 })
          const peer = server.requestIP(req)?.address ?? ''
          const data = new WsSocket(clientOf(peer, req.headers.get('x-forwarded-for')))
          if (server.upgrade(req, { data, headers: { 'Sec-WebSocket-Protocol': protocol } })) return undefined
          return new Response('expected a WebSocket upgrade\n', { status: 400 })
        },
        websocket: {
          perMessageDeflate: false,
          maxPayloadLength: Math.min(opts.maxPacketSize + FRAME_SLACK, 4_294_967_295),
          open(ws) {
            ws.data.bind(ws)
            ws.data.sink = accept(ws.data, name)
          },
          message(ws, message) {
            // each message arrives in a buffer of its own, never reused (test 27-websocket)
            if (typeof message !== 'string') ws.data.sink?.data(message)
            // [MQTT-6.0.0-1] a control packet in a text frame closes the connection
            else {
              ws.data.closed()
              ws.close(1003, 'MQTT needs binary frames')
            }
          },
          drain(ws) {
            ws.data.sink?.drain()
          },
          close(ws) {
            ws.data.closed()
          },
          error(_error, ws) {
            ws.data.closed()
            ws.terminate()
          },
        },
      })
    } catch (e) {
      const files = opts.tls === undefined ? '' : ` (files ${opts.tls.cert}, ${opts.tls.key})`
      throw new Error(`${name} listener on ${opts.host}:${port}: ${(e as Error).message}${files}`)
    }
  }
  if (opts.tls !== undefined && opts.tls.clientCert === 'request') {
    opts.log.warn('wss: tls.clientCert request is not available on WebSocket listeners (Bun.serve cannot show the certificate); wss asks for none', { listener: 'wss' })
  }
  let server = serve(opts.port, opts.tls === undefined ? undefined : readTls(opts.tls))
  const retired: Server<WsSocket>[] = []
  const listener: Listener = {
    name,
    host: opts.host,
    get port() {
      return server.port ?? 0
    },
    stop(force = false) {
      void server.stop(force)
      if (force) for (const r of retired) void r.stop(true)
    },
  }
  const tls = opts.tls
  if (tls !== undefined) {
    listener.reload = () => {
      const next = serve(listener.port, readTls(tls))
      const old = server
      server = next
      // open WebSockets stay on the old server until they close
      void old.stop(false)
      retired.push(old)
      opts.log.info('tls certificates reloaded', { listener: 'wss', cert: tls.cert })
    }
  }
  return listener
}

/** The first subprotocol the client offers that we speak, or null. */
export function pickSubprotocol(header: string | null): string | null {
  if (header === null) return null
  for (const p of header.split(',')) {
    const t = p.trim()
    if (SUBPROTOCOLS.has(t)) return t
  }
  return null
}

/**
 * The client's address: the TCP peer, unless that is a trusted proxy; then X-Forwarded-For is
 * read from the right (each proxy appends the address it saw) and the first address that is
 * not a trusted proxy is the client. Entries that are not IP addresses end the walk.
 */
export function clientAddress(trusted: readonly string[]): (peer: string, xff: string | null) => string {
  if (trusted.length === 0) return (peer) => unmapIPv4(peer)
  const isTrusted = trustedProxies(trusted, 'ws.trustedProxies')
  return (peer, xff) => {
    let addr = unmapIPv4(peer)
    if (xff === null || !isTrusted(addr)) return addr
    const hops = xff.split(',')
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = unmapIPv4(hops[i]!.trim())
      if (isIP(hop) === 0) break
      addr = hop
      if (!isTrusted(hop)) break
    }
    return addr
  }
}

/** Reads the PEM files (listenTls has already checked them when both listeners are on). */
function readTls(o: WssOptions): TlsOptions {
  if (o.clientCert === 'require' && o.ca === '') throw new Error('tls.ca must name the CA file that client certificates chain to when tls.clientCert is require')
  const tls: TlsOptions = { cert: readPem('certificate', o.cert), key: readPem('key', o.key), minVersion: VERSION[o.minVersion] }
  if (o.clientCert === 'require') {
    tls.ca = readPem('CA', o.ca)
    tls.requestCert = true
    tls.rejectUnauthorized = true
  }
  return tls
}

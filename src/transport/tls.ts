import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Socket, SocketHandler, TCPSocketListener, TCPSocketListenOptions } from 'bun'
import type { PeerCertificate } from '../auth/types.ts'
import type { Logger } from '../log.ts'
import type { Accept, ConnectionSink, Listener, MqttSocket } from './types.ts'
import { sinkHandlers } from './tcp.ts'
import { TlsRefusal } from './tls-refusal.ts'

/** Where a TLS-based listener (mqtts, wss, quic) listens and which certificate files it uses. */
export interface TlsFiles {
  host: string
  port: number
  /** PEM files: the server certificate chain, its private key, the CA(s) client certificates must chain to. */
  cert: string
  key: string
  ca: string
  /** none: no certificate asked; request: asked, a client may send none, but one that does
   * not verify fails the handshake (as in Mosquitto); require: no valid certificate, no connection. */
  clientCert: 'none' | 'request' | 'require'
}

export interface TlsListenOptions extends TlsFiles {
  minVersion: 'TLSv1.2' | 'TLSv1.3'
  log: Logger
}

type Sock = Socket<ConnectionSink | null>

/**
 * Bun 1.4.4 honours `minVersion` as a protocol version number (a string throws) but does not
 * declare it, nor `reusePort` on Bun.listen; both are checked by test/integration/21-tls.test.ts.
 */
type TlsOptions = Bun.TLSOptions & { minVersion: number }
type ListenOptions = TCPSocketListenOptions<ConnectionSink | null> & { reusePort: boolean; tls: TlsOptions }
const VERSION = { 'TLSv1.2': 0x0303, 'TLSv1.3': 0x0304 } as const

/**
 * MQTT over TLS (listener "mqtts") on Bun.listen. As with TCP, Bun's socket is the MqttSocket and
 * its data slot holds the connection. Certificate reload starts a second listener on the same
 * port (SO_REUSEPORT) with the new files and stops the old one from accepting: Bun's
 * listener.reload() swaps handlers only and ignores `tls`. Open connections stay up.
 */
export function listenTls(opts: TlsListenOptions, accept: Accept): Listener {
  const { host, clientCert: mode, log } = opts
  const handlers: SocketHandler<ConnectionSink | null> = {
    // with a handshake handler, open runs at TCP accept: the connect timeout covers the handshake
    open(socket) {
      // only listeners that ask for a certificate have one to show (32 B per socket for the slot)
      if (mode !== 'none') (socket as Sock & MqttSocket).peerCertificate = peerCertificate
      socket.data = accept(socket, 'mqtts')
    },
    handshake(socket, success, error) {
      // Bun reports "unable to get issuer certificate" whenever no client certificate was
      // verified, also when none was asked for (mode none) or sent (mode request)
      const none = mode !== 'none' && socket.getPeerCertificate() == null
      if (success && (error === null || mode === 'none' || (mode === 'request' && none))) return
      const reason = success && none ? 'no client certificate (one is required)' : handshakeReason(error, opts.minVersion)
      const fields = { listener: 'mqtts', remote: socket.remoteAddress, reason, code: codeOf(error), error: error?.message }
      // a client that hangs up mid-handshake (port probe, health check) is not worth a warning
      const level = codeOf(error) === 'ECONNRESET' ? 'debug' : 'warn'
      log[level](`TLS handshake failed from ${socket.remoteAddress}: ${reason}`, fields)
      const sink = socket.data
      // a completed handshake with a refused certificate: its CONNECT gets a refusing CONNACK
      if (success) { socket.data = new TlsRefusal(socket, reason, sink); return }
      socket.data = null
      sink?.close()
      socket.end()
    },
    ...sinkHandlers,
  }
  const listen = (port: number, tls: TlsOptions): TCPSocketListener<ConnectionSink | null> => {
    const o: ListenOptions = { hostname: host, port, reusePort: true, tls, socket: handlers }
    try {
      return Bun.listen<ConnectionSink | null>(o)
    } catch (e) {
      throw new Error(`TLS listener on ${host}:${port}: ${(e as Error).message} (files ${opts.cert}, ${opts.key}${opts.ca !== '' ? `, ${opts.ca}` : ''})`)
    }
  }
  let server = listen(opts.port, loadTls(opts))
  /** Listeners replaced by a reload: they accept nothing but still own their open connections. */
  const retired: TCPSocketListener<ConnectionSink | null>[] = []
  return {
    name: 'mqtts',
    host,
    get port() {
      return server.port
    },
    stop(force = false) {
      server.stop(force)
      if (force) for (const r of retired) r.stop(true)
    },
    reload() {
      const tls = loadTls(opts)
      const next = listen(server.port, tls)
      const old = server
      server = next
      // connections the kernel already queued on the old socket are reset (tcp_migrate_req=1 moves them)
      old.stop(false)
      retired.push(old)
      log.info('tls certificates reloaded', { listener: 'mqtts', cert: opts.cert, fingerprint: new X509Certificate(tls.cert as string).fingerprint256 })
    },
  }
}

/** MqttSocket.peerCertificate for Bun TLS sockets: computed from what Bun keeps, on every call. */
function peerCertificate(this: Sock): PeerCertificate | undefined {
  const c = this.getPeerCertificate()
  if (c == null || typeof c.fingerprint256 !== 'string') return undefined
  const cn: string | string[] | undefined = c.subject?.CN
  return {
    cn: Array.isArray(cn) ? cn[0] : cn,
    // "DNS:a, email:b"; a value with a comma is quoted by the runtime ("DNS:\"a, b\"")
    sans: splitSans(c.subjectaltname),
    fingerprint: c.fingerprint256,
    authorized: this.getAuthorizationError() == null,
  }
}

/** "DNS:a, email:b" as ["DNS:a", "email:b"]; a value with a comma is quoted by the runtime ("DNS:\"a, b\""). */
export function splitSans(text: string | undefined): string[] {
  return text ? (text.match(/(?:[^,"\s][^,"]*|"(?:\\.|[^"\\])*")+/g) ?? []) : []
}

const codeOf = (e: Error | null): string => (e as (Error & { code?: string }) | null)?.code ?? ''

const UNKNOWN_CA = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_SIGNATURE_FAILURE'])

/** A short reason for the log from what Bun hands the handshake callback (BoringSSL codes). */
function handshakeReason(e: Error | null, minVersion: string): string {
  if (e === null) return 'handshake failed'
  const code = codeOf(e), m = e.message
  if (UNKNOWN_CA.has(code)) return 'certificate signed by unknown authority'
  if (code === 'CERT_HAS_EXPIRED') return 'certificate has expired'
  if (code === 'CERT_NOT_YET_VALID') return 'certificate is not yet valid'
  if (code === 'CERT_REVOKED') return 'certificate has been revoked'
  if (code === 'ECONNRESET') return 'client closed the connection during the handshake'
  if (m.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE')) return 'no client certificate (one is required)'
  if (m.includes('UNSUPPORTED_PROTOCOL')) return `TLS version not accepted (minimum ${minVersion})`
  if (m.includes('WRONG_VERSION_NUMBER') || m.includes('HTTP_REQUEST')) return 'not a TLS client (plain MQTT on the TLS port?)'
  if (m.includes('NO_SHARED_CIPHER')) return 'no cipher in common'
  const alert = /TLSV1_ALERT_([A-Z_]+)/.exec(m)
  if (alert !== null) return `client sent alert ${alert[1]!.toLowerCase().replaceAll('_', ' ')} (does it trust the server certificate?)`
  return m.replace(/^error:[0-9a-f]+:[^:]*:[^:]*:/, '')
}

/** Reads and checks the PEM files; every error names the file and what is wrong with it. */
function loadTls(o: TlsListenOptions): TlsOptions {
  if (o.clientCert !== 'none' && o.ca === '') throw new Error(`tls.ca must name the CA file that client certificates chain to when tls.clientCert is ${o.clientCert}`)
  const cert = readPem('certificate', o.cert)
  const leaf = certificates('certificate', o.cert, cert)[0]!
  const keyText = readPem('key', o.key)
  let key
  try {
    key = createPrivateKey(keyText)
  } catch (e) {
    throw new Error(`TLS key file ${o.key}: not a valid unencrypted PEM private key (${sslReason(e)})`)
  }
  if (!leaf.checkPrivateKey(key)) throw new Error(`TLS key file ${o.key} does not belong to the certificate in ${o.cert}`)
  if (Date.parse(leaf.validTo) < Date.now()) o.log.warn('tls server certificate has expired', { cert: o.cert, validTo: leaf.validTo })
  const tls: TlsOptions = {
    cert, key: keyText,
    requestCert: o.clientCert !== 'none',
    // the handshake callback refuses (tls-refusal.ts): Bun's own refusal is a silent close
    rejectUnauthorized: false,
    minVersion: VERSION[o.minVersion],
  }
  if (o.ca !== '') {
    tls.ca = readPem('CA', o.ca)
    certificates('CA', o.ca, tls.ca)
  }
  return tls
}

/** Reads a PEM file; the error names the file and why (no such file, permission denied, ...). */
export function readPem(what: string, path: string): string {
  if (path === '') throw new Error(`tls: the ${what} file is not set`)
  try {
    return readFileSync(path, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (e as Error).message
    throw new Error(`TLS ${what} file ${path}: cannot read it (${why})`)
  }
}

/** Parses every PEM certificate block of a file (a chain, or a CA bundle). */
function certificates(what: string, path: string, text: string): X509Certificate[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)
  if (blocks === null) throw new Error(`TLS ${what} file ${path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)`)
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b)
    } catch (e) {
      throw new Error(`TLS ${what} file ${path}: certificate ${i + 1} is invalid (${sslReason(e)})`)
    }
  })
}

const sslReason = (e: unknown): string => (e as Error).message.replace(/^error:[0-9a-f]+:[^:]*:[^:]*:/, '')

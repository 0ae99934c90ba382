/**
 * A TCP client that sends everything first and reads only afterwards, like a client that
 * pipelines packets without reading. It answers whether the server's last bytes arrived
 * (ended by EOF) or were lost to a reset (ECONNRESET).
 */
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'

export interface LateReadResult {
  /** Every byte received, in order. */
  bytes: Buffer
  /** The connection ended with FIN (EOF) rather than an error. */
  eof: boolean
  /** The socket error (e.g. ECONNRESET), if any. */
  error: string | null
  /** Milliseconds from the start of reading to EOF or error. */
  ms: number
}

export interface LateReaderOptions {
  host?: string
  /** Connect with TLS (options for node:tls, e.g. ca). */
  tls?: ConnectionOptions
  /** Keep the write side open after the server's EOF (the connection stays half-open). */
  halfOpen?: boolean
  timeoutMs?: number
}

export class LateReader {
  readonly #socket: Socket

  private constructor(socket: Socket) {
    this.#socket = socket
  }

  /** Connects with reading paused. */
  static connect(port: number, o: LateReaderOptions = {}): Promise<LateReader> {
    const host = o.host ?? '127.0.0.1'
    const ms = o.timeoutMs ?? 3000
    return new Promise((resolve, reject) => {
      const allowHalfOpen = o.halfOpen ?? false
      const socket: Socket = o.tls === undefined
        ? netConnect({ port, host, allowHalfOpen })
        : tlsConnect({ port, host, ...o.tls, allowHalfOpen } as ConnectionOptions)
      socket.pause()
      const timer = setTimeout(() => { socket.destroy(); reject(new Error(`LateReader: connect to ${host}:${port} timed out`)) }, ms)
      socket.once('error', (e) => { clearTimeout(timer); reject(e) })
      socket.once(o.tls === undefined ? 'connect' : 'secureConnect', () => { clearTimeout(timer); socket.removeAllListeners('error'); resolve(new LateReader(socket)) })
    })
  }

  /** Resolves when the socket is fully closed (the server closed it, or it failed). */
  closed(timeoutMs = 5000): Promise<void> {
    const socket = this.#socket
    if (socket.destroyed) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`LateReader: socket still open after ${timeoutMs}ms`)), timeoutMs)
      socket.once('close', () => { clearTimeout(timer); resolve() })
    })
  }

  /** Writes bytes; resolves when they were handed to the kernel (or the socket failed). */
  send(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      this.#socket.write(bytes, () => resolve())
    })
  }

  /** Starts reading and collects everything until EOF or an error (or the timeout). Unless
   * keepOpen, the socket is destroyed then. */
  readAll(timeoutMs = 5000, keepOpen = false): Promise<LateReadResult> {
    const socket = this.#socket
    const chunks: Buffer[] = []
    const start = Date.now()
    return new Promise((resolve, reject) => {
      let done = false
      const finish = (eof: boolean, error: string | null) => {
        if (done) return
        done = true
        clearTimeout(timer)
        if (!keepOpen) socket.destroy()
        resolve({ bytes: Buffer.concat(chunks), eof, error, ms: Date.now() - start })
      }
      const timer = setTimeout(() => {
        if (done) return
        done = true
        socket.destroy()
        reject(new Error(`LateReader: no EOF within ${timeoutMs}ms (received ${Buffer.concat(chunks).toString('hex').slice(0, 80)})`))
      }, timeoutMs)
      socket.on('data', (c: Buffer) => chunks.push(c))
      socket.on('end', () => finish(true, null))
      socket.on('error', (e: NodeJS.ErrnoException) => finish(false, e.code ?? e.message))
      socket.on('close', () => finish(false, 'closed without EOF'))
      socket.resume()
    })
  }

  destroy(): void {
    this.#socket.destroy()
  }
}

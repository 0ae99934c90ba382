import type { Socket } from 'bun'
import type { Logger } from '../log.ts'
import { parseProxyHeader } from './proxy-protocol.ts'
import type { Accept, ConnectionSink, Listener, MqttSocket } from './types.ts'

/** A Bun socket whose data slot holds the connection's sink. */
interface SinkSocket { data: ConnectionSink | null }

const detach = (socket: SinkSocket) => {
  const sink = socket.data
  socket.data = null
  sink?.close()
}

/** Bun socket handlers that forward to the sink in the socket's data slot (TCP and TLS). */
export const sinkHandlers = {
  data(socket: SinkSocket, chunk: Buffer) {
    socket.data?.data(chunk)
  },
  drain(socket: SinkSocket) {
    socket.data?.drain()
  },
  close: detach,
  error: detach,
}

export interface TcpOptions {
  /** Peers that must start with a PROXY protocol header naming the client (trusted proxies). */
  proxied?: (address: string) => boolean
  /** Seconds a proxy may take to send its header. */
  headerTimeout?: number
  log?: Logger
}

/** Plain TCP listener on Bun.listen. Bun's socket is the MqttSocket itself and its data slot
 * holds the connection: nothing else is allocated per connection (a proxied connection gets a
 * small wrapper carrying the client's address). */
export function listenTcp(host: string, port: number, accept: Accept, opts: TcpOptions = {}): Listener {
  const { proxied } = opts
  const server = Bun.listen<ConnectionSink | null>({
    hostname: host,
    port,
    socket: {
      open(socket) {
        socket.data = proxied !== undefined && proxied(socket.remoteAddress)
          ? new ProxyPreface(socket, accept, opts)
          : accept(socket, 'mqtt')
      },
      ...sinkHandlers,
    },
  })
  return {
    name: 'mqtt',
    host,
    port: server.port,
    stop: (force = false) => server.stop(force),
  }
}

/** A connection from a trusted proxy, seen through the client address of its PROXY header. */
class ProxiedSocket implements MqttSocket {
  readonly #socket: Socket<ConnectionSink | null>
  readonly remoteAddress: string
  constructor(socket: Socket<ConnectionSink | null>, address: string) {
    this.#socket = socket
    this.remoteAddress = address
  }

  write(data: Uint8Array): number {
    return this.#socket.write(data)
  }

  end(): void {
    this.#socket.end()
  }

  shutdown(): void {
    this.#socket.shutdown()
  }

  terminate(): void {
    this.#socket.terminate()
  }
}

/** Reads the PROXY header, then hands the socket (and any bytes after the header) to the broker. */
class ProxyPreface implements ConnectionSink {
  #socket: Socket<ConnectionSink | null>
  #accept: Accept
  #opts: TcpOptions
  #buf: Buffer | null = null
  #timer: ReturnType<typeof setTimeout>

  constructor(socket: Socket<ConnectionSink | null>, accept: Accept, opts: TcpOptions) {
    this.#socket = socket
    this.#accept = accept
    this.#opts = opts
    this.#timer = setTimeout(() => this.#fail('no PROXY header in time'), (opts.headerTimeout ?? 10) * 1000)
    this.#timer.unref?.()
  }

  data(chunk: Buffer): void {
    const buf = this.#buf === null ? chunk : Buffer.concat([this.#buf, chunk])
    let header
    try {
      header = parseProxyHeader(buf)
    } catch (e) {
      return this.#fail((e as Error).message)
    }
    if (header === null) { this.#buf = buf; return }
    clearTimeout(this.#timer)
    this.#buf = null
    const socket = this.#socket
    // LOCAL / UNKNOWN (e.g. the proxy's health check): the proxy's own address
    const address = header.address ?? socket.remoteAddress
    const sink = this.#accept(new ProxiedSocket(socket, address), 'mqtt')
    socket.data = sink
    if (header.length < buf.length) sink.data(buf.subarray(header.length))
  }

  drain(): void {}

  close(): void {
    clearTimeout(this.#timer)
  }

  #fail(why: string): void {
    clearTimeout(this.#timer)
    this.#opts.log?.warn('closing connection from a trusted proxy: bad PROXY header', { remote: this.#socket.remoteAddress, error: why })
    this.#socket.data = null
    this.#socket.end()
  }
}

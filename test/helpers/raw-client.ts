/**
 * A raw TCP MQTT client for tests. It sends bytes exactly as given (build them with
 * packet-builder.ts) and decodes what the server sends with mqtt-packet, an independent parser.
 * Nothing here sleeps to synchronise: every wait is on an event and rejects with a clear message
 * when its timeout passes. The only timed wait is expectNothing(), which asserts absence.
 */
import { connect as netConnect, type Socket } from 'node:net'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { connect as connectBytes, type ConnectOpts, type Version } from './packet-builder.ts'

export interface RawClientOptions {
  host?: string
  /** Protocol version used to decode server packets; also set from the level of a sent CONNECT. */
  version?: Version
  /** Timeout for the TCP connection itself. */
  connectTimeoutMs?: number
  /** Source address to connect from (e.g. 127.0.0.2, for per-address behaviour). */
  localAddress?: string
}

type Wake = () => void

export class RawClient {
  #socket: Socket
  #pending: Buffer = Buffer.alloc(0)
  #frames: Buffer[] = []
  #wakers = new Set<Wake>()
  #closed = false
  #error: Error | null = null
  #explicitVersion: boolean
  version: Version

  private constructor(socket: Socket, opts: RawClientOptions) {
    this.#socket = socket
    this.version = opts.version ?? 4
    this.#explicitVersion = opts.version !== undefined
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('error', (e: Error) => { this.#error = e })
    socket.on('close', () => { this.#closed = true; this.#wake() })
  }

  /** Opens a TCP connection to 127.0.0.1:port (or opts.host). */
  static connect(port: number, opts: RawClientOptions = {}): Promise<RawClient> {
    const host = opts.host ?? '127.0.0.1'
    const ms = opts.connectTimeoutMs ?? 3000
    return new Promise((resolve, reject) => {
      const socket = netConnect({ port, host, ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}) })
      socket.setNoDelay(true)
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new Error(`RawClient: TCP connect to ${host}:${port} did not complete within ${ms}ms`))
      }, ms)
      socket.once('error', (e) => { clearTimeout(timer); reject(new Error(`RawClient: TCP connect to ${host}:${port} failed: ${e.message}`)) })
      socket.once('connect', () => { clearTimeout(timer); resolve(new RawClient(socket, opts)) })
    })
  }

  /** Connects and completes an MQTT handshake with a CONNECT built from opts; returns the CONNACK. */
  static async open(port: number, connect: ConnectOpts = {}, opts: RawClientOptions = {}): Promise<{ client: RawClient; connack: Packet }> {
    const client = await RawClient.connect(port, { ...opts, version: connect.version ?? opts.version ?? 4 })
    client.send(connectBytes(connect))
    const connack = await client.nextOf('connack')
    return { client, connack }
  }

  /** Stops reading: the kernel buffers fill up, then the server's output to this client backs up. */
  pause(): void {
    this.#socket.pause()
  }

  /** Reads again (a paused socket does not report the server's close either). */
  resume(): void {
    this.#socket.resume()
  }

  get isClosed(): boolean {
    return this.#closed
  }

  /** Writes bytes as they are. A CONNECT with level 3, 4 or 5 sets the decode version unless one was given. */
  send(bytes: Uint8Array | number[]): void {
    const buf = Buffer.from(bytes)
    if (!this.#explicitVersion && buf.length > 0 && buf[0] === 0x10) {
      const level = connectLevel(buf)
      if (level === 3 || level === 4 || level === 5) this.version = level
    }
    this.#socket.write(buf)
  }

  /** The next whole frame from the server, as raw bytes (fixed header included). */
  async nextRaw(timeoutMs = 3000): Promise<Buffer> {
    await this.#waitFor(() => this.#frames.length > 0 || this.#closed, timeoutMs, 'a packet')
    const f = this.#frames.shift()
    if (f === undefined) throw new Error(`RawClient: connection closed by the server while waiting for a packet${this.#why()}`)
    return f
  }

  /** The next packet from the server, decoded by mqtt-packet with the current protocol version. */
  async next(timeoutMs = 3000): Promise<Packet> {
    return this.decode(await this.nextRaw(timeoutMs))
  }

  /** The next packet of the given type; packets of other types are skipped (and discarded). */
  async nextOf(cmd: Packet['cmd'], timeoutMs = 3000): Promise<Packet> {
    const deadline = Date.now() + timeoutMs
    const skipped: string[] = []
    for (;;) {
      const left = deadline - Date.now()
      let p: Packet
      try {
        p = await this.next(Math.max(left, 1))
      } catch (e) {
        const seen = skipped.length > 0 ? ` (skipped: ${skipped.join(', ')})` : ''
        throw new Error(`RawClient.nextOf('${cmd}'): ${(e as Error).message}${seen}`)
      }
      if (p.cmd === cmd) return p
      skipped.push(p.cmd)
    }
  }

  /** Resolves when the server has closed the connection. Unread packets stay readable. */
  async closed(timeoutMs = 3000): Promise<void> {
    await this.#waitFor(() => this.#closed, timeoutMs, 'the server to close the connection')
  }

  /**
   * Asserts that the server sends nothing for ms milliseconds. Rejects at once if a packet is
   * already queued or arrives, and (unless allowClose) if the server closes the connection.
   */
  async expectNothing(ms: number, opts: { allowClose?: boolean } = {}): Promise<void> {
    const check = () => {
      if (this.#frames.length > 0) {
        const p = this.#frames[0]!
        let what: string
        try { what = this.decode(p).cmd } catch { what = `undecodable frame ${p.toString('hex')}` }
        throw new Error(`RawClient.expectNothing: expected silence but received ${what}`)
      }
      if (this.#closed && !opts.allowClose) throw new Error(`RawClient.expectNothing: the server closed the connection${this.#why()}`)
    }
    check()
    await new Promise<void>((resolve, reject) => {
      const wake = () => {
        try { check() } catch (e) { clearTimeout(timer); this.#wakers.delete(wake); reject(e as Error) }
      }
      const timer = setTimeout(() => { this.#wakers.delete(wake); resolve() }, ms)
      this.#wakers.add(wake)
    })
  }

  /** Decodes one whole frame with mqtt-packet. */
  decode(frame: Buffer): Packet {
    const parser = mqttPacket.parser({ protocolVersion: this.version })
    let packet: Packet | null = null
    let error: Error | null = null
    parser.on('packet', (p: Packet) => { packet ??= p })
    parser.on('error', (e: Error) => { error ??= e })
    parser.parse(frame)
    if (error !== null) throw new Error(`RawClient: mqtt-packet (v${this.version}) could not decode ${frame.toString('hex')}: ${(error as Error).message}`)
    if (packet === null) throw new Error(`RawClient: mqtt-packet (v${this.version}) found no packet in ${frame.toString('hex')}`)
    return packet
  }

  /** Ends the connection (FIN) without sending DISCONNECT, and waits for the socket to close. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#socket.end()
    try {
      await this.closed(1000)
    } catch {
      this.#socket.destroy()
    }
  }

  /** Drops the connection abruptly (no FIN handshake). */
  destroy(): void {
    this.#socket.destroy()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #onData(chunk: Buffer): void {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk])
    for (;;) {
      const size = frameSize(this.#pending)
      if (size === -2) {
        this.#error = new Error(`server sent a remaining length longer than 4 bytes: ${this.#pending.subarray(0, 5).toString('hex')}`)
        this.#socket.destroy()
        break
      }
      if (size < 0 || this.#pending.length < size) break
      this.#frames.push(Buffer.from(this.#pending.subarray(0, size)))
      this.#pending = this.#pending.subarray(size)
    }
    this.#wake()
  }

  #wake(): void {
    for (const w of [...this.#wakers]) w()
  }

  #why(): string {
    return this.#error !== null ? ` (${this.#error.message})` : ''
  }

  #waitFor(ready: () => boolean, ms: number, what: string): Promise<void> {
    if (ready()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const wake = () => {
        if (!ready()) return
        clearTimeout(timer)
        this.#wakers.delete(wake)
        resolve()
      }
      const timer = setTimeout(() => {
        this.#wakers.delete(wake)
        const state = this.#closed ? 'closed' : 'open'
        reject(new Error(`RawClient: timed out after ${ms}ms waiting for ${what} (connection ${state})`))
      }, ms)
      this.#wakers.add(wake)
    })
  }
}

/** Total size of the first frame in buf, -1 if the remaining length is incomplete, -2 if malformed. */
function frameSize(buf: Buffer): number {
  let len = 0
  let mult = 1
  for (let i = 1; i < 5; i++) {
    if (i >= buf.length) return -1
    const b = buf[i]!
    len += (b & 0x7f) * mult
    mult *= 128
    if ((b & 0x80) === 0) return i + 1 + len
  }
  return -2
}

/** Protocol level of a CONNECT frame, or -1. */
function connectLevel(buf: Buffer): number {
  let i = 1
  while (i < buf.length && (buf[i]! & 0x80) !== 0) i++
  i++
  if (i + 2 > buf.length) return -1
  const nameLen = (buf[i]! << 8) | buf[i + 1]!
  const at = i + 2 + nameLen
  return at < buf.length ? buf[at]! : -1
}

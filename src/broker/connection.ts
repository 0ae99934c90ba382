import type { Packet } from 'mqtt-packet'
import type { ClientAcl } from '../auth/types.ts'
import { Framer } from '../codec/framer.ts'
import { encodePacket, type ProtocolVersion } from '../codec/packets.ts'
import { MqttError, RC } from '../codec/reason-codes.ts'
import type { Session } from '../session/session.ts'
import type { Will } from '../session/types.ts'
import type { ConnectionSink, MqttSocket } from '../transport/types.ts'
import type { Broker } from './broker.ts'
import { dispatch } from './dispatch.ts'
import { forgetExpiry, refuseLargeConnect } from './handlers/connect.ts'
import { slowConsumer, type AddressEntry } from './limits.ts'

export type ConnState = 'new' | 'authenticating' | 'connected' | 'closed'

/** Packets a client may send while its CONNECT is still being authenticated (held, replayed after). */
const HELD_MAX_BYTES = 1024 * 1024

const DEFAULT_LISTENER = 'mqtt'
/** The protocol's limits when a v5 client states none (and always for v3). */
const DEFAULT_RECEIVE_MAXIMUM = 65535
const DEFAULT_MAX_PACKET_SIZE = 268435460

/** Per-connection state most connections never use, created on first use (an idle
 * connection object is then 224 bytes instead of 320). */
class Extras {
  listener = DEFAULT_LISTENER
  clientReceiveMaximum = DEFAULT_RECEIVE_MAXIMUM
  clientMaxPacketSize = DEFAULT_MAX_PACKET_SIZE
  clientTopicAliasMax = 0
  cleanDisconnect = false
  aliasesIn: Map<number, string> | null = null
  aliasesOut: Map<string, number> | null = null
  authMethod: string | undefined = undefined
  authState: unknown = undefined
  pubTokens = 0
  pubByteTokens = 0
  pubAt = 0
  /** Bytes the socket did not accept yet, in order; written on drain (never re-concatenated). */
  backlog: Uint8Array[] | null = null
  backlogBytes = 0
  /** Frames held while an asynchronous step (e.g. authentication) runs, replayed in order. */
  held: [number, Buffer][] | null = null
  /** Their bytes, counted against the memory budget (as `partial`). */
  heldBytes = 0
  peerClosed = false
}

/**
 * One client connection: framing, the coalesced write queue, keepalive bookkeeping and the
 * per-connection protocol state. Packet handling lives in handlers/.
 */
export class Connection implements ConnectionSink {
  readonly broker: Broker
  readonly socket: MqttSocket
  state: ConnState = 'new'
  version: ProtocolVersion = 4
  clientId = ''
  username: string | undefined
  /** Topic lists from the client's token (JWT claim); replace the ACL file for this client. */
  acl: ClientAcl | null = null
  session: Session | null = null
  /** Neighbours in the broker's list of open connections. */
  prevConn: Connection | null = null
  nextConn: Connection | null = null
  will: Will | null = null
  /** Keepalive in seconds as enforced (0 = none). */
  keepalive = 0
  lastRx = Date.now()
  readonly openedAt = Date.now()
  /** QoS 1/2 PUBLISH received on this connection without PUBACK / PUBCOMP yet (spec 4.9). */
  unackedIn = 0
  /** The per-address entry this connection counts under (null: per-address limits off). */
  addressEntry: AddressEntry | null = null
  /** Output of this turn: the first packet, then (from the second on) all of them in #out. */
  #out1: Uint8Array | null = null
  #out: Uint8Array[] | null = null
  #outBytes = 0
  #flushScheduled = false
  #x: Extras | null = null
  /** Holds an incomplete packet; null while none is pending (the usual case). */
  #framer: Framer | null = null

  /** The framer holding this connection's incomplete packet, if any. */
  get framer(): Framer | null {
    return this.#framer
  }

  #extras(): Extras {
    return this.#x ??= new Extras()
  }

  /** Name of the listener the client came in on (mqtt, mqtts, ws, wss, quic). */
  get listener(): string { return this.#x === null ? DEFAULT_LISTENER : this.#x.listener }
  /** The client's limits (v5 CONNECT properties); a value other than the default is kept in Extras. */
  get clientReceiveMaximum(): number { return this.#x === null ? DEFAULT_RECEIVE_MAXIMUM : this.#x.clientReceiveMaximum }
  set clientReceiveMaximum(n: number) { if (this.#x !== null || n !== DEFAULT_RECEIVE_MAXIMUM) this.#extras().clientReceiveMaximum = n }
  get clientMaxPacketSize(): number { return this.#x === null ? DEFAULT_MAX_PACKET_SIZE : this.#x.clientMaxPacketSize }
  set clientMaxPacketSize(n: number) { if (this.#x !== null || n !== DEFAULT_MAX_PACKET_SIZE) this.#extras().clientMaxPacketSize = n }
  get clientTopicAliasMax(): number { return this.#x === null ? 0 : this.#x.clientTopicAliasMax }
  set clientTopicAliasMax(n: number) { if (this.#x !== null || n !== 0) this.#extras().clientTopicAliasMax = n }
  /** The socket was closed by the peer (or the network), not by the broker (end()); kept in
   * Extras, made at the close, so an open connection does not pay for it. */
  get peerClosed(): boolean { return this.#x !== null && this.#x.peerClosed }
  /** A normal DISCONNECT arrived: no will (unless reason 0x04). */
  get cleanDisconnect(): boolean { return this.#x !== null && this.#x.cleanDisconnect }
  set cleanDisconnect(b: boolean) { if (this.#x !== null || b) this.#extras().cleanDisconnect = b }

  /** Topic aliases the client set for messages to us (created on first use). */
  get aliasesIn(): Map<number, string> | null { return this.#x === null ? null : this.#x.aliasesIn }
  set aliasesIn(m: Map<number, string> | null) { this.#extras().aliasesIn = m }
  /** Topic aliases we set for messages to the client (created on first use). */
  get aliasesOut(): Map<string, number> | null { return this.#x === null ? null : this.#x.aliasesOut }
  set aliasesOut(m: Map<string, number> | null) { this.#extras().aliasesOut = m }
  /** Enhanced authentication method of this connection, when any. */
  get authMethod(): string | undefined { return this.#x?.authMethod }
  set authMethod(m: string | undefined) { this.#extras().authMethod = m }
  get authState(): unknown { return this.#x?.authState }
  set authState(v: unknown) { this.#extras().authState = v }
  /** Publish rate token buckets (limits.ts): messages, bytes, last refill (ms; 0 = none yet). */
  get pubTokens(): number { return this.#x === null ? 0 : this.#x.pubTokens }
  set pubTokens(n: number) { this.#extras().pubTokens = n }
  get pubByteTokens(): number { return this.#x === null ? 0 : this.#x.pubByteTokens }
  set pubByteTokens(n: number) { this.#extras().pubByteTokens = n }
  get pubAt(): number { return this.#x === null ? 0 : this.#x.pubAt }
  set pubAt(n: number) { this.#extras().pubAt = n }
  /** Called by the framer for every whole packet. */
  onFrame(header: number, buf: Buffer, start: number, end: number, owned: boolean): void {
    if (this.state === 'closed') return
    const held = this.#x === null ? null : this.#x.held
    if (held === null) return this.#run(header, buf, start, end, owned)
    // a client that is still being authenticated may pipeline packets, but not without bound
    const x = this.#x!
    const bytes = x.heldBytes + end - start
    if (bytes > HELD_MAX_BYTES) {
      this.broker.log.warn('closing connection: too much data while its CONNECT is pending', { remote: this.socket.remoteAddress, bytes })
      this.end()
      return
    }
    held.push([header, Buffer.from(buf.subarray(start, end))])
    x.heldBytes = bytes
    // held frames count like incomplete packets: many logins waiting with pipelined data are bounded together
    const mem = this.broker.memory
    mem.partial += end - start
    mem.grew()
  }

  /** Bytes of frames held while the CONNECT is being authenticated (counted in the memory budget). */
  get heldBytes(): number {
    return this.#x === null ? 0 : this.#x.heldBytes
  }

  /** The held frames no longer count against the memory budget (replayed or dropped). */
  #releaseHeld(x: Extras): void {
    if (x.heldBytes === 0) return
    this.broker.memory.partial -= x.heldBytes
    x.heldBytes = 0
  }

  constructor(broker: Broker, socket: MqttSocket, listener = DEFAULT_LISTENER) {
    this.broker = broker
    this.socket = socket
    if (listener !== DEFAULT_LISTENER) this.#extras().listener = listener
  }

  get v5(): boolean {
    return this.version === 5
  }

  /** Called by the transport with received bytes. Never throws. */
  data(chunk: Buffer): void {
    // a lingering socket: read and discarded (linger.ts tells a quiet peer from a sending one)
    if (this.state === 'closed') return this.broker.linger.input(this.socket)
    this.lastRx = Date.now()
    this.broker.stats.bytesIn += chunk.length
    const f = this.#framer
    try {
      const lim = this.broker.config.limits
      // before the CONNACK no packet may be larger than what may be held meanwhile: refused as
      // soon as its length is read, instead of buffering megabytes for an unauthenticated client
      const max = this.state === 'connected' ? lim.maxPacketSize : Math.min(lim.maxPacketSize, Math.max(HELD_MAX_BYTES, lim.maxConnectPacketSize))
      if (f === null) {
        const rest = Framer.first(chunk, max, this, lim)
        if (rest !== null && (this.state as ConnState) !== 'closed') { this.#framer = rest; this.#countPartial(rest) }
      } else {
        f.maxPacketSize = max
        try { f.push(chunk, this) } finally { if ((this.state as ConnState) !== 'closed') this.#countPartial(f) }
        if (f.buffered === 0 && this.#framer === f) this.#framer = null
      }
    } catch (e) {
      // a CONNECT over limits.maxConnectPacketSize: v5 clients get CONNACK 0x95
      if (this.state === 'new' && f === null) refuseLargeConnect(this, chunk, e)
      else this.fail(e)
    }
    this.broker.touch()
    this.flush()
  }

  /** Counts the change of an incomplete packet against the memory budget (memory.ts). */
  #countPartial(f: Framer): void {
    const d = f.buffered - f.accounted
    if (d === 0) return
    f.accounted += d
    const mem = this.broker.memory
    mem.partial += d
    if (d > 0) mem.grew()
  }

  #run(header: number, buf: Buffer, start: number, end: number, owned: boolean): void {
    const r = dispatch(this, header, buf, start, end, owned)
    if (r instanceof Promise) {
      const x = this.#extras()
      x.held = []
      r.then(() => this.#resume(), (e: unknown) => { x.held = null; this.#releaseHeld(x); this.fail(e); this.flush() })
    }
  }

  #resume(): void {
    const x = this.#extras()
    const held = x.held ?? []
    x.held = null
    this.#releaseHeld(x)
    try {
      for (let i = 0; i < held.length; i++) {
        if (this.state === 'closed') return
        const [h, body] = held[i]!
        this.#run(h, body, 0, body.length, true)
        if (x.held !== null) {
          // another asynchronous step: the rest is held (and counted) again
          const rest = held.slice(i + 1)
          let bytes = 0
          for (const [, b] of rest) bytes += b.length
          ;(x.held as [number, Buffer][]).push(...rest)
          x.heldBytes += bytes
          this.broker.memory.partial += bytes
          break
        }
      }
    } catch (e) {
      this.fail(e)
    }
    this.flush()
  }

  /** Turns an error from packet handling into a DISCONNECT (v5) and a closed connection. */
  fail(e: unknown): void {
    if (this.state === 'closed') return
    if (e instanceof MqttError) {
      this.broker.log.warn('closing connection: protocol violation', {
        clientId: this.clientId || undefined, remote: this.socket.remoteAddress, reason: `0x${e.code.toString(16)}`, error: e.message,
      })
      this.disconnect(e.code, e.message)
    } else {
      this.broker.log.error('closing connection: internal error', {
        clientId: this.clientId || undefined, error: String((e as Error)?.stack ?? e),
      })
      this.disconnect(RC.UNSPECIFIED_ERROR, 'internal error')
    }
  }

  /** Queues a packet; bytes go out in one write at the end of the current callback. */
  send(bytes: Uint8Array): void {
    if (this.state === 'closed') return
    if (this.#out1 === null) this.#out1 = bytes
    else if (this.#out === null) this.#out = [this.#out1, bytes]
    else this.#out.push(bytes)
    this.#outBytes += bytes.length
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      this.broker.scheduleFlush(this)
    }
  }

  sendPacket(packet: Packet): void {
    const bytes = encodePacket(packet, this.version)
    // [MQTT-3.1.2-24] never send a packet larger than the client's Maximum Packet Size
    if (bytes.length > this.clientMaxPacketSize) {
      if (packet.cmd === 'publish') return
      if ('properties' in packet && packet.properties) {
        const stripped = { ...packet, properties: { ...packet.properties, reasonString: undefined, userProperties: undefined } } as Packet
        const small = encodePacket(stripped, this.version)
        if (small.length <= this.clientMaxPacketSize) this.send(small)
      }
      return
    }
    this.send(bytes)
  }

  /** Bytes the socket did not accept yet (written on drain). */
  get backlogBytes(): number {
    return this.#x === null ? 0 : this.#x.backlogBytes
  }

  /** Bytes queued and not yet accepted by the socket. */
  get pendingBytes(): number {
    return this.#outBytes + (this.#x === null ? 0 : this.#x.backlogBytes)
  }

  /**
   * Writes what is queued in one socket write. While store writes are uncommitted the output
   * waits for the group commit (which flushes it right after): nothing leaves the broker before
   * the state it implies is durable, so a crash never lets a message out twice.
   */
  flush(force = false): void {
    this.#flushScheduled = false
    const first = this.#out1
    if (first === null) return
    // output that was still waiting (e.g. for the group commit) when the client went away: it
    // can no longer be sent, and must not count against the memory budget (end() flushes the
    // last packets before the connection counts as closed)
    if (this.state === 'closed') { this.#out1 = null; this.#out = null; this.#outBytes = 0; return }
    if (!force && this.broker.store.pending) {
      this.broker.commits.hold(this)
      return
    }
    const out = this.#out
    const data = out === null ? first : Buffer.concat(out, this.#outBytes)
    this.#out1 = null
    this.#out = null
    this.#outBytes = 0
    this.broker.stats.bytesOut += data.length
    const x = this.#x
    if (x !== null && x.backlog !== null) {
      x.backlog.push(data)
      x.backlogBytes += data.length
      const mem = this.broker.memory
      mem.pending += data.length
      mem.grew()
      // the socket has not taken the earlier output yet and more piles up: a client that does
      // not read is closed once that passes limits.maxPendingBytes (output that the socket
      // refused in a single write is not counted: a large message to a reading client is fine)
      const cap = this.broker.config.limits.maxPendingBytes
      if (cap > 0 && x.backlogBytes > cap) {
        slowConsumer(this, this.pendingBytes)
        this.abort()
      }
      return
    }
    this.#write(data)
  }

  /**
   * Closes a client that does not read, dropping its unsent output. No DISCONNECT: it would sit
   * behind megabytes the client is not reading (EMQX likewise just closes such a connection
   * when its send buffer or queue overflows; Mosquitto drops messages and keeps the client).
   */
  abort(): void {
    if (this.state === 'closed') return
    this.#dropBacklog()
    this.#out1 = null
    this.#out = null
    this.#outBytes = 0
    this.#closed()
    try { this.socket.end() } catch { /* already closed */ }
  }

  /** Forgets the unsent output (and its count against the memory budget). */
  #dropBacklog(): void {
    const x = this.#x
    if (x === null || x.backlog === null) return
    if (this.state !== 'closed') this.broker.memory.pending -= x.backlogBytes
    x.backlog = null
    x.backlogBytes = 0
  }

  /**
   * Closes the connection for the memory budget (memory.ts), dropping its unsent output. A v5
   * client with nothing unsent gets DISCONNECT 0x89 Server busy first.
   */
  shed(): void {
    if (this.backlogBytes > 0) this.abort()
    else this.disconnect(RC.SERVER_BUSY, 'server busy')
  }

  #write(data: Uint8Array): void {
    const n = this.socket.write(data)
    if (n < data.length) {
      const rest = data.subarray(Math.max(n, 0))
      const x = this.#extras()
      x.backlog = [rest]
      x.backlogBytes = rest.length
      const mem = this.broker.memory
      mem.pending += rest.length
      mem.grew()
    }
  }

  drain(): void {
    try {
      const x = this.#x
      const backlog = x === null ? null : x.backlog
      if (x === null || backlog === null) return
      while (backlog.length > 0) {
        const first = backlog[0]!
        const n = this.socket.write(first)
        if (n < first.length) {
          backlog[0] = first.subarray(Math.max(n, 0))
          x.backlogBytes -= Math.max(n, 0)
          // a closed connection's rest no longer counts (#closed)
          if (this.state !== 'closed') this.broker.memory.pending -= Math.max(n, 0)
          return
        }
        backlog.shift()
        x.backlogBytes -= first.length
        if (this.state !== 'closed') this.broker.memory.pending -= first.length
      }
      x.backlog = null
      x.backlogBytes = 0
    } catch (e) {
      this.fail(e)
    }
  }

  /**
   * Server-initiated close. v5 clients that completed CONNECT get DISCONNECT with the reason
   * code first [MQTT-4.13.1-1]; before CONNACK, the caller sends a CONNACK instead.
   */
  disconnect(reason: number, reasonString?: string): void {
    if (this.state === 'closed') return
    if (this.v5 && this.state === 'connected') {
      const props = reasonString !== undefined ? { reasonString } : undefined
      this.sendPacket({ cmd: 'disconnect', reasonCode: reason, properties: props } as Packet)
    }
    this.end()
  }

  /** Flushes what is queued and closes the connection; the session layer sees close() at once,
   * the socket is closed after lingering (transport/linger.ts). */
  end(): void {
    if (this.state === 'closed') return
    // the last output may depend on uncommitted writes: commit them before it goes
    if (this.broker.store.pending) this.broker.commits.flush()
    this.flush(true)
    // flush closes a client whose unsent output passed limits.maxPendingBytes
    if ((this.state as ConnState) === 'closed') return
    this.#closed()
    // the socket lingers, reading and discarding, so that the last packet is read, not reset
    try { this.broker.linger.close(this.socket) } catch { /* already closed */ }
  }

  /** Called by the transport when the socket closed (by either side). Never throws. */
  close(): void {
    if (this.state === 'closed') return this.broker.linger.closed(this.socket)
    // not closed by the broker (end() sets the state first): the client (or the network) did it
    this.#extras().peerClosed = true
    this.#closed()
  }

  #closed(): void {
    // what this connection held no longer counts against the memory budget (output still
    // unsent may drain after the close: drain() then leaves the count alone)
    const x = this.#x
    if (x !== null && x.backlog !== null) this.broker.memory.pending -= x.backlogBytes
    if (x !== null) this.#releaseHeld(x)
    const f = this.#framer
    if (f !== null) {
      this.broker.memory.partial -= f.accounted
      f.accounted = 0
      this.#framer = null
    }
    forgetExpiry(this)
    try {
      this.broker.connectionClosed(this)
    } catch (e) {
      this.broker.log.error('error while closing connection', { clientId: this.clientId || undefined, error: String((e as Error)?.stack ?? e) })
    }
    this.state = 'closed'
  }
}

import type { Packet } from 'mqtt-packet'
import { encodePacket } from '../codec/packets.ts'
import type { ConnectionSink } from './types.ts'

/** How long a refused TLS client has to send its CONNECT before the connection is closed (the
 * broker's connect timeout, which still applies through the connection it holds, may be shorter). */
const WAIT_MS = 10_000
/** A CONNECT's protocol level sits within its first 13 bytes (fixed header, "MQIsdp", level). */
const PREFIX = 13

interface Writable { write(data: Uint8Array): number; end(): void }

/**
 * A TLS connection whose client certificate was refused (none where one is required, unknown
 * CA, expired, bad). Bun 1.4.4 cannot end such a handshake with a TLS alert: its verify
 * callback accepts every certificate and the listener can only close the socket afterwards,
 * silently (oven-sh/bun#33630 would change that for node:tls), which MQTT clients take for a
 * network error and retry forever. So the handshake is let through, none of the client's bytes
 * reach the broker, and the CONNECT is answered here with a refusing CONNACK: v5 0x87 Not
 * authorized with a Reason String naming the certificate problem, v3 5 (not authorized).
 * Clients fail at once with an error instead of hanging. The broker's connection for the socket
 * stays open (it never sees a byte) until the socket closes, so the socket still counts for the
 * per-address and connection limits and the connect timeout.
 */
export class TlsRefusal implements ConnectionSink {
  readonly #socket: Writable
  readonly #reason: string
  readonly #held: ConnectionSink | null
  #buf: Buffer | null = null
  #timer: ReturnType<typeof setTimeout>

  constructor(socket: Writable, reason: string, held: ConnectionSink | null) {
    this.#socket = socket
    this.#reason = reason
    this.#held = held
    this.#timer = setTimeout(() => this.#end(), WAIT_MS)
    this.#timer.unref?.()
  }

  data(chunk: Buffer): void {
    const buf = this.#buf === null ? chunk : Buffer.concat([this.#buf, chunk])
    const level = connectLevel(buf)
    if (level === undefined) { this.#buf = buf; return }
    if (level !== null) {
      const packet = (level === 5
        ? { cmd: 'connack', sessionPresent: false, reasonCode: 0x87, properties: { reasonString: `TLS client certificate refused: ${this.#reason}` } }
        : { cmd: 'connack', sessionPresent: false, returnCode: 5 }) as Packet
      try { this.#socket.write(encodePacket(packet, level === 5 ? 5 : 4)) } catch { /* closed meanwhile */ }
    }
    this.#end()
  }

  drain(): void {}

  close(): void {
    clearTimeout(this.#timer)
    this.#held?.close()
  }

  #end(): void {
    clearTimeout(this.#timer)
    this.#buf = null
    try { this.#socket.end() } catch { /* already closed */ }
  }
}

/**
 * The protocol level of a CONNECT from its first bytes: undefined while more bytes are needed,
 * null when this is not the start of a CONNECT (then nothing is answered).
 */
export function connectLevel(b: Buffer): number | null | undefined {
  if (b.length === 0) return undefined
  if (b[0] !== 0x10) return null
  let i = 1
  for (; i < 5; i++) {
    if (i >= b.length) return undefined
    if ((b[i]! & 0x80) === 0) break
  }
  if (i === 5) return null
  const at = i + 1
  if (b.length < at + 2) return b.length >= PREFIX ? null : undefined
  const nameLen = b.readUInt16BE(at)
  if (nameLen !== 4 && nameLen !== 6) return null
  const levelAt = at + 2 + nameLen
  if (b.length <= levelAt) return undefined
  const name = b.toString('latin1', at + 2, levelAt)
  if (name !== 'MQTT' && name !== 'MQIsdp') return null
  return b[levelAt]!
}

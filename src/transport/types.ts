import type { PeerCertificate } from '../auth/types.ts'

/** What the broker needs from any byte-stream transport (TCP, TLS, WebSocket, QUIC). */
export interface MqttSocket {
  /** Writes bytes; returns how many were accepted (the rest must be retried on drain). */
  write(data: Uint8Array): number
  /** Closes the connection after pending writes. */
  end(): void
  /**
   * Ends the write side after pending writes (TCP FIN, TLS close_notify, WebSocket close frame)
   * while input is still read, so that a peer that is still sending reads the last packet
   * instead of a reset (see linger.ts). Transports without it close with end().
   */
  shutdown?(): void
  /** Closes at once, dropping unsent output and unread input (after lingering). */
  terminate?(): void
  readonly remoteAddress: string
  /** The client certificate's identity, on TLS listeners that asked for one (mutual TLS). */
  peerCertificate?(): PeerCertificate | undefined
}

/** Callbacks a transport calls for each connection. */
export interface ConnectionSink {
  /** Received bytes. The transport must hand over a buffer it never reuses or changes
   * afterwards (the broker keeps views of it, e.g. a QoS 0 frame forwarded as received). */
  data(chunk: Buffer): void
  drain(): void
  close(): void
}

export interface Listener {
  readonly name: string
  readonly host: string
  readonly port: number
  /** Stops accepting; with force, also closes every open connection. */
  stop(force?: boolean): void
  /** Re-reads certificate files (TLS listeners); new connections get the new ones. Throws with a clear message when they are invalid (the old ones stay). */
  reload?(): void | Promise<void>
}

/** Creates the per-connection sink for a new socket; `listener` names the listener (mqtt, mqtts, ws, ...). */
export type Accept = (socket: MqttSocket, listener: string) => ConnectionSink

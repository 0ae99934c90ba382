/** What the broker needs from any byte-stream transport (TCP, TLS, WebSocket, QUIC). */
export interface MqttSocket {
  /** Writes bytes; returns how many were accepted (the rest must be retried on drain). */
  write(data: Uint8Array): number
  /** Closes the connection after pending writes. */
  end(): void
  readonly remoteAddress: string
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
}

/** Creates the per-connection sink for a new socket. */
export type Accept = (socket: MqttSocket) => ConnectionSink

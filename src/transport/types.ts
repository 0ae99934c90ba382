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

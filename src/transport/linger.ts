import type { MqttSocket } from './types.ts'

/** How long a closed connection's socket keeps reading after its last packet. */
export const LINGER_MS = 1000
/** Sockets that may linger at once; beyond it a socket is closed at once (as before lingering). */
export const MAX_LINGERING = 1024

/**
 * Closes sockets so that the peer reads the last packet (DISCONNECT, a refusing CONNACK).
 * Closing a socket whose peer is still sending makes the kernel answer with RST, and the peer
 * then discards what it had not read yet. So the write side is shut down (FIN after the queued
 * output) and the input is read and discarded (the closed Connection ignores it) until the peer
 * closes too or LINGER_MS passed; then the socket is closed. The connection counts as closed for
 * the broker at once; only the socket lingers, and at most `max` of them (one owner per broker).
 */
export class Linger {
  readonly #timers = new Map<MqttSocket, ReturnType<typeof setTimeout>>()
  readonly #max: number
  readonly #ms: number

  constructor(max = MAX_LINGERING, ms = LINGER_MS) {
    this.#max = max
    this.#ms = ms
  }

  /** Sockets lingering now. */
  get size(): number {
    return this.#timers.size
  }

  /** Ends `socket` after its queued output, lingering when the transport can and room is left. */
  close(socket: MqttSocket): void {
    if (socket.shutdown === undefined || this.#timers.size >= this.#max || this.#timers.has(socket)) {
      socket.end()
      return
    }
    socket.shutdown()
    const timer = setTimeout(() => this.#over(socket), this.#ms)
    timer.unref?.()
    this.#timers.set(socket, timer)
  }

  /** The socket closed (the peer closed too, or it failed): its slot is free. */
  closed(socket: MqttSocket): void {
    const timer = this.#timers.get(socket)
    if (timer === undefined) return
    clearTimeout(timer)
    this.#timers.delete(socket)
  }

  /** Closes every lingering socket now (broker shutdown). */
  stop(): void {
    for (const socket of [...this.#timers.keys()]) this.#over(socket)
  }

  #over(socket: MqttSocket): void {
    this.closed(socket)
    try {
      if (socket.terminate !== undefined) socket.terminate()
      else socket.end()
    } catch { /* already closed */ }
  }
}

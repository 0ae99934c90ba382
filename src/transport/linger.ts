import type { MqttSocket } from './types.ts'

/** How long a closed connection's socket keeps reading after its last packet. */
export const LINGER_MS = 1000
/** Sockets that may linger at once; beyond it a socket is closed at once (as before lingering). */
export const MAX_LINGERING = 1024
/** A peer that sent nothing for this long at the end of the linger has nothing unread left here:
 * its socket is closed normally (no RST), so a slow reader still gets what was sent. */
export const QUIET_MS = 100

interface Lingering {
  timer: ReturnType<typeof setTimeout>
  /** When input last arrived (ms since the epoch). */
  lastInput: number
}

/**
 * Closes sockets so that the peer reads the last packet (DISCONNECT, a refusing CONNACK).
 * Closing a socket whose peer is still sending makes the kernel answer with RST, and the peer
 * then discards what it had not read yet. So the write side is shut down (FIN after the queued
 * output) and the input is read and discarded (the closed Connection ignores it) until the peer
 * closes too or LINGER_MS passed. Then a peer that stopped sending (nothing arrived for
 * QUIET_MS: nothing unread here) is closed normally, so a peer that reads late still reads the
 * last packet and EOF; only a peer that keeps sending is cut off with an abortive close (RST).
 * The connection counts as closed for the broker at once; only the socket lingers, and at most
 * `max` of them (one owner per broker).
 */
export class Linger {
  readonly #timers = new Map<MqttSocket, Lingering>()
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
    const timer = setTimeout(() => this.#over(socket, false), this.#ms)
    timer.unref?.()
    this.#timers.set(socket, { timer, lastInput: Date.now() })
  }

  /** Input arrived on a closed connection's socket (read and discarded). */
  input(socket: MqttSocket): void {
    const l = this.#timers.get(socket)
    if (l !== undefined) l.lastInput = Date.now()
  }

  /** The socket closed (the peer closed too, or it failed): its slot is free. */
  closed(socket: MqttSocket): void {
    const l = this.#timers.get(socket)
    if (l === undefined) return
    clearTimeout(l.timer)
    this.#timers.delete(socket)
  }

  /** Closes every lingering socket now (broker shutdown). */
  stop(): void {
    for (const socket of [...this.#timers.keys()]) this.#over(socket, true)
  }

  /** The linger is over: a normal close for a quiet peer, an abortive one for a sending peer
   * (or at shutdown). */
  #over(socket: MqttSocket, force: boolean): void {
    const l = this.#timers.get(socket)
    const sending = force || (l !== undefined && Date.now() - l.lastInput < QUIET_MS)
    this.closed(socket)
    try {
      if (sending && socket.terminate !== undefined) socket.terminate()
      else socket.end()
    } catch { /* already closed */ }
  }
}

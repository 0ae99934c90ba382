import { RC } from '../codec/reason-codes.ts'
import type { Session } from '../session/session.ts'
import type { Broker } from './broker.ts'
import type { Connection } from './connection.ts'
import { memoryBudgetBytes } from './memory-limit.ts'

/** At most one log line per kind of action per this many ms (with the count since the last). */
const WARN_EVERY_MS = 10_000
/** Estimated bytes a queued message costs beyond its topic and payload (objects, array slot). */
const QUEUED_OVERHEAD = 200
/** A connection holding less than this is never closed for the budget (it frees too little). */
const MIN_VICTIM_BYTES = 4096
/** After a relief pass found nothing to close, the next one waits this long. */
const IDLE_RELIEF_MS = 1000

/** What the memory budget did (since start). */
export interface MemoryCounters {
  /** QoS 0 messages not sent to a slow consumer because memory was above 3/4 of the budget. */
  qos0Dropped: number
  /** Connections closed because they held the most memory while memory was above the budget. */
  disconnected: number
  /** New connections refused (v5 CONNACK 0x89, v3 3) while memory was above the budget. */
  refused: number
}

type Kind = keyof MemoryCounters

/**
 * The global memory budget (limits.memory) over the buffers that clients make the broker hold:
 * unsent output (`pending`: what sockets did not accept yet), incomplete packets held by
 * framers and whole packets held while a CONNECT is being authenticated (`partial`), and
 * messages in session queues (`queued`, estimated twice a second by the sweep).
 * Each is a counter changed where bytes are added and removed (O(1) per event); the actions
 * run only above thresholds:
 * - above 3/4 of the budget, QoS 0 messages to clients with unsent output are dropped;
 * - above the budget, new connections are refused (CONNACK 0x89 / 3), and a relief pass
 *   closes the connections holding the most (output, incomplete packet, queue) until usage is
 *   back under 3/4 of the budget.
 * Each action is counted (admin stats, $SYS) and logged at warn at most once per 10 s.
 */
export class MemoryBudget {
  /** The budget in bytes; Infinity when there is none (limits.memory = 0). */
  readonly limit: number
  /** 3/4 of the budget: QoS 0 drop threshold and the level a relief pass brings usage down to. */
  readonly high: number
  pending = 0
  partial = 0
  queued = 0
  readonly counters: MemoryCounters = { qos0Dropped: 0, disconnected: 0, refused: 0 }
  readonly #broker: Broker
  #reliefAt = 0
  #reliefScheduled = false
  readonly #warnedAt: Record<Kind, number> = { qos0Dropped: 0, disconnected: 0, refused: 0 }
  readonly #unwarned: Record<Kind, number> = { qos0Dropped: 0, disconnected: 0, refused: 0 }

  constructor(broker: Broker) {
    this.#broker = broker
    const bytes = memoryBudgetBytes(broker.config.limits.memory)
    this.limit = bytes > 0 ? bytes : Infinity
    this.high = bytes > 0 ? Math.floor(bytes * 3 / 4) : Infinity
    broker.log.info('memory budget', { limit: bytes, setting: broker.config.limits.memory })
  }

  /** Bytes counted against the budget now. */
  get used(): number {
    return this.pending + this.partial + this.queued
  }

  /** Usage is above the budget: new connections are refused, the largest holders closed. */
  get over(): boolean {
    return this.pending + this.partial + this.queued > this.limit
  }

  /** Usage is above 3/4 of the budget: QoS 0 messages to slow consumers are dropped. */
  get pressure(): boolean {
    return this.pending + this.partial + this.queued > this.high
  }

  /** Called after a counter grew: schedules a relief pass when usage is above the budget. */
  grew(): void {
    if (this.#reliefScheduled || !this.over) return
    this.#reliefScheduled = true
    const wait = Math.max(0, this.#reliefAt - Date.now())
    setTimeout(this.#relieve, wait)
  }

  /** A QoS 0 message was not sent to a slow consumer. */
  droppedQos0(conn: Connection): void {
    this.#broker.stats.dropped++
    this.#count('qos0Dropped', 'memory budget: dropping QoS 0 messages to clients that do not keep up', conn)
  }

  /**
   * Refuses a new connection while usage is above the budget (v5 CONNACK 0x89 Server busy,
   * v3 3 Server unavailable). Returns true when it did.
   */
  refuse(conn: Connection): boolean {
    if (!this.over) return false
    this.#count('refused', 'memory budget: refusing new connections', conn)
    if (conn.v5) conn.sendPacket({ cmd: 'connack', sessionPresent: false, reasonCode: RC.SERVER_BUSY, properties: { reasonString: 'server busy' } })
    else conn.sendPacket({ cmd: 'connack', sessionPresent: false, returnCode: 3 })
    conn.end()
    return true
  }

  /** The estimated bytes of queued messages, from the sweep's pass over the sessions (expiry.ts). */
  setQueued(bytes: number): void {
    this.queued = bytes
    this.grew()
  }

  /** Closes the connections holding the most until usage is under 3/4 of the budget. */
  #relieve = (): void => {
    this.#reliefScheduled = false
    if (!this.over) return
    const victims: [number, Connection][] = []
    for (const c of this.#broker.allConnections()) {
      const held = heldBy(c)
      if (held >= MIN_VICTIM_BYTES && c.state !== 'closed') victims.push([held, c])
    }
    if (victims.length === 0) { this.#reliefAt = Date.now() + IDLE_RELIEF_MS; return }
    victims.sort((a, b) => b[0] - a[0])
    // what each frees is counted off here: its queue's estimate only changes at the next sample
    let excess = this.used - this.high
    for (const [held, c] of victims) {
      if (excess <= 0) break
      this.#count('disconnected', 'memory budget: closing the connections that hold the most memory', c, held)
      c.shed()
      excess -= held
    }
  }

  #count(kind: Kind, msg: string, conn: Connection, held?: number): void {
    this.counters[kind]++
    this.#unwarned[kind]++
    const now = Date.now()
    if (now - this.#warnedAt[kind] < WARN_EVERY_MS) return
    const log = this.#broker.log
    log.warn(msg, {
      count: this.#unwarned[kind], clientId: conn.clientId || undefined, remote: conn.socket.remoteAddress, held,
      used: this.used, limit: this.limit, pending: this.pending, partial: this.partial, queued: this.queued,
    })
    this.#warnedAt[kind] = now
    this.#unwarned[kind] = 0
  }

  /** Counters and current usage, for the admin API and $SYS. */
  snapshot(): Record<string, number> {
    return {
      limit: this.limit === Infinity ? 0 : this.limit, used: this.used, pending: this.pending, partial: this.partial, queued: this.queued,
      ...this.counters,
    }
  }
}

/** Estimated memory of a session's queued messages: the bytes of its in-memory queue head plus
 * an overhead per message. */
export function queuedBytes(s: Session): number {
  // only the in-memory head: queued messages kept only in the store (queue.ts) cost no memory
  return s.headBytes + s.headCount * QUEUED_OVERHEAD
}

/** Bytes counted against the budget for one connection: its unsent output, incomplete packet,
 * frames held while its CONNECT is being authenticated, and queue. */
function heldBy(c: Connection): number {
  const f = c.framer
  const s = c.session
  return c.backlogBytes + (f === null ? 0 : f.buffered) + c.heldBytes + (s === null || s.queuedCount === 0 ? 0 : queuedBytes(s))
}

import type { IConnectPacket } from 'mqtt-packet'
import { RC } from '../codec/reason-codes.ts'
import type { Session } from '../session/session.ts'
import type { Broker } from './broker.ts'
import type { Connection } from './connection.ts'
import { memoryBudgetBytes } from './memory-limit.ts'
import { QueueSample, queuedBytes, trimOfflineQueues } from './memory-queues.ts'
import { countDrop } from './queue.ts'

/** At most one log line per kind of action per this many ms (with the count since the last). */
const WARN_EVERY_MS = 10_000
/** A connection holding less than this is never closed for the budget (it frees too little). */
const MIN_VICTIM_BYTES = 4096
/** After a relief pass found nothing to close, the next one waits this long. */
const IDLE_RELIEF_MS = 1000
/** After a relief pass that acted, the next one waits this long (what it freed shows first). */
const RELIEF_EVERY_MS = 500

/** What the memory budget did (since start). */
export interface MemoryCounters {
  /** QoS 0 messages not sent to a slow consumer because memory was above 3/4 of the budget. */
  qos0Dropped: number
  /** Connections closed because they held the most memory while memory was above the budget. */
  disconnected: number
  /** New connections refused (v5 CONNACK 0x89, v3 3) while memory was above the budget. */
  refused: number
  /** Messages dropped from the largest queues of offline sessions while memory was above the budget. */
  queueTrimmed: number
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
  readonly counters: MemoryCounters = { qos0Dropped: 0, disconnected: 0, refused: 0, queueTrimmed: 0 }
  readonly #broker: Broker
  readonly #sample = new QueueSample()
  #reliefAt = 0
  #reliefScheduled = false
  readonly #warnedAt: Record<Kind, number> = { qos0Dropped: 0, disconnected: 0, refused: 0, queueTrimmed: 0 }
  readonly #unwarned: Record<Kind, number> = { qos0Dropped: 0, disconnected: 0, refused: 0, queueTrimmed: 0 }

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
    countDrop(this.#broker.queuePolicy, 'memory')
    this.#count('qos0Dropped', 'memory budget: dropping QoS 0 messages to clients that do not keep up', conn)
  }

  /**
   * Refuses a new connection while usage is above the budget (v5 CONNACK 0x89 Server busy,
   * v3 3 Server unavailable). Returns true when it did. A client resuming a session whose
   * queue is held in memory is let in: it is the one that can drain that queue.
   */
  refuse(conn: Connection, p: IConnectPacket): boolean {
    if (!this.over) return false
    if (!p.clean && p.clientId !== '' && (this.#broker.sessions.get(p.clientId)?.headCount ?? 0) > 0) return false
    this.#count('refused', 'memory budget: refusing new connections', conn)
    if (conn.v5) conn.sendPacket({ cmd: 'connack', sessionPresent: false, reasonCode: RC.SERVER_BUSY, properties: { reasonString: 'server busy' } })
    else conn.sendPacket({ cmd: 'connack', sessionPresent: false, returnCode: 3 })
    conn.end()
    return true
  }

  /** One session's part of the estimate of queued messages, in the sweep's pass (expiry.ts). */
  sampleQueue(s: Session): number {
    return this.limit === Infinity ? queuedBytes(s) : this.#sample.add(s)
  }

  /** The estimated bytes of queued messages, from the sweep's pass over the sessions (expiry.ts). */
  setQueued(bytes: number): void {
    this.queued = bytes
    this.#sample.reset()
    this.grew()
  }

  /**
   * Brings usage back under 3/4 of the budget: first the oldest messages of the largest offline
   * queues are dropped, then the connections that would free the most are closed. The queues
   * are estimated afresh first (the sweep's estimate may be up to half a second old: a queue
   * that has just gone out as output would count twice), what the pass frees is taken off, and
   * after a pass that acted the next one waits half a second.
   */
  #relieve = (): void => {
    this.#reliefScheduled = false
    if (!this.over) return
    let queued = 0
    for (const s of this.#broker.sessions.values()) if (s.headCount > 0) queued += this.#sample.add(s)
    this.#sample.reset()
    this.queued = queued
    if (!this.over) return
    let excess = this.used - this.high
    const [dropped, trimmed] = trimOfflineQueues(this.#broker.sessions.values(), excess)
    if (dropped > 0) {
      this.#count('queueTrimmed', 'memory budget: dropping the oldest messages of the largest offline queues', null, trimmed, dropped)
    }
    if (trimmed > 0) this.#freed(trimmed)
    excess -= trimmed
    if (excess <= 0 || !this.over) return
    const victims: [number, number, Connection][] = []
    let freeable = 0
    for (const c of this.#broker.allConnections()) {
      if (c.state === 'closed') continue
      const queue = freedQueue(c)
      const held = c.backlogBytes + (c.framer === null ? 0 : c.framer.buffered) + c.heldBytes + queue
      if (held >= MIN_VICTIM_BYTES) { victims.push([held, queue, c]); freeable += held }
    }
    // closing clients helps only when what they hold is what keeps usage above the budget
    if (victims.length === 0 || this.used - freeable > this.limit) {
      this.#reliefAt = Date.now() + (dropped === 0 ? IDLE_RELIEF_MS : RELIEF_EVERY_MS)
      return
    }
    victims.sort((a, b) => b[0] - a[0])
    let queue = 0
    for (const [held, q, c] of victims) {
      if (excess <= 0) break
      this.#count('disconnected', 'memory budget: closing the connections that hold the most memory', c, held)
      c.shed()
      excess -= held
      queue += q
    }
    // unsent output and incomplete packets were taken off as the connections closed
    this.#freed(queue)
  }

  /** Takes bytes freed from queues off the estimate until the next sample. */
  #freed(queue: number): void {
    this.queued = Math.max(0, this.queued - queue)
    this.#reliefAt = Date.now() + RELIEF_EVERY_MS
  }

  #count(kind: Kind, msg: string, conn: Connection | null, held?: number, n = 1): void {
    this.counters[kind] += n
    this.#unwarned[kind] += n
    const now = Date.now()
    if (now - this.#warnedAt[kind] < WARN_EVERY_MS) return
    const log = this.#broker.log
    log.warn(msg, {
      count: this.#unwarned[kind], clientId: conn?.clientId || undefined, remote: conn?.socket.remoteAddress, held,
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

/** The part of a connection's queue that closing it frees: all of it when the session ends with
 * the connection or its queue moves to a durable store; none when it waits in memory. */
function freedQueue(c: Connection): number {
  const s = c.session
  if (s === null || s.headCount === 0 || (s.expiryInterval > 0 && s.store === null)) return 0
  return queuedBytes(s)
}

import type { Message } from '../codec/message.ts'
import { messageSize } from '../session/queue-policy.ts'
import type { Session } from '../session/session.ts'
import { noteDrop, unpersist } from './queue.ts'

/** Estimated bytes a queued message costs beyond its topic and payload (objects, array slot). */
export const QUEUED_OVERHEAD = 200
/** Queued messages looked at one by one per sample; past that a queue counts all its bytes. */
const SAMPLE_MAX_MESSAGES = 200_000

/** Estimated memory of a session's queued messages: the bytes of its in-memory queue head plus
 * an overhead per message (a message queued for several sessions counts in each). */
export function queuedBytes(s: Session): number {
  // only the in-memory head: queued messages kept only in the store (queue.ts) cost no memory
  return s.headBytes + s.headCount * QUEUED_OVERHEAD
}

/**
 * The sweep's estimate of the memory of all queues (memory.ts), taken twice a second. A message
 * queued for many sessions is one object: its topic and payload count once per sample, the
 * overhead once per queue. Looking at each message is bounded per sample; queues beyond that
 * bound count every message (an over-estimate).
 */
export class QueueSample {
  readonly #seen = new Set<Message>()
  #looked = 0

  /** Adds a session's queue to this sample; returns its bytes not counted yet. */
  add(s: Session): number {
    const n = s.headCount
    if (n === 0) return 0
    if (this.#looked + n > SAMPLE_MAX_MESSAGES) return queuedBytes(s)
    this.#looked += n
    const q = s.queue
    const seen = this.#seen
    let bytes = n * QUEUED_OVERHEAD
    for (let i = 0; i < n; i++) {
      const m = q[i]!.msg
      if (seen.has(m)) continue
      seen.add(m)
      bytes += messageSize(m)
    }
    return bytes
  }

  /** Starts the next sample. */
  reset(): void {
    this.#seen.clear()
    this.#looked = 0
  }
}

/**
 * Drops the oldest messages of the largest queues of offline sessions until about `excess`
 * bytes are freed: an offline client cannot be closed to free its queue, and a queue that kept
 * memory above the budget would refuse everyone, the queue's owner included. Each message is
 * counted as dropped for reason `memory`. With a durable store an offline queue is kept in the
 * store only: a head still in memory is moved there, nothing is lost. Returns the messages
 * dropped and the estimated bytes freed.
 */
export function trimOfflineQueues(sessions: Iterable<Session>, excess: number): [number, number] {
  const list: [number, Session][] = []
  for (const s of sessions) if (s.connection === null && s.headCount > 0) list.push([queuedBytes(s), s])
  list.sort((a, b) => b[0] - a[0])
  let dropped = 0
  let freed = 0
  for (const [bytes, s] of list) {
    if (freed >= excess) break
    if (s.store !== null) {
      s.evictHead()
      freed += bytes
      continue
    }
    while (freed < excess && s.headCount > 0) {
      const d = s.shiftQueued()!
      unpersist(s, d)
      noteDrop(s, 'memory')
      dropped++
      freed += messageSize(d.msg) + QUEUED_OVERHEAD
    }
  }
  return [dropped, freed]
}

import { StoreError } from '../store/types.ts'
import type { Broker } from './broker.ts'
import type { Connection } from './connection.ts'

/** How a group commit ended for the acknowledgements waiting on it. */
export type CommitResult = 'ok' | 'partial' | 'failed'
type Waiter = (result: CommitResult) => void

/**
 * Group commit: the writes of one event-loop turn (or commitInterval ms) go into one
 * transaction, and the acknowledgements that depend on them go out after it. With nothing
 * buffered, an acknowledgement goes out at once.
 */
export class GroupCommit {
  readonly #broker: Broker
  #waiters: Waiter[] = []
  #held = new Set<Connection>()
  #flushing = false
  #scheduled = false
  #run = () => this.flush()

  constructor(broker: Broker) {
    this.#broker = broker
  }

  /** Nothing uncommitted and nobody waiting: an acknowledgement may go out now. */
  get idle(): boolean {
    return !this.#broker.store.pending && this.#waiters.length === 0
  }

  /** Runs fn after the writes made so far are durable (or failed to be). */
  after(fn: Waiter): void {
    if (!this.#broker.store.pending && this.#waiters.length === 0) {
      fn('ok')
      return
    }
    this.#waiters.push(fn)
    this.schedule()
  }

  /** A connection whose output waits for the commit. */
  hold(conn: Connection): void {
    this.#held.add(conn)
    this.schedule()
  }

  schedule(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    const ms = this.#broker.config.data.commitInterval
    if (ms > 0) setTimeout(this.#run, ms)
    else setImmediate(this.#run)
  }

  flush(): void {
    // a waiter that closes a connection commits through here again: one flush at a time
    if (this.#flushing) return
    this.#flushing = true
    try {
      this.#flushOnce()
    } finally {
      this.#flushing = false
    }
  }

  #flushOnce(): void {
    this.#scheduled = false
    const waiters = this.#waiters
    this.#waiters = []
    let result: CommitResult = 'ok'
    const store = this.#broker.store
    if (store.pending) {
      try {
        const dropped = store.commit()
        this.#broker.stats.commits++
        if (dropped > 0) {
          result = 'partial'
          this.#broker.stats.storeFull++
          this.#broker.log.warn('store full: writes dropped', { dropped })
        }
      } catch (e) {
        result = 'failed'
        this.#broker.log.error('store commit failed', { error: (e as Error).message, code: e instanceof StoreError ? e.code : undefined })
        setTimeout(() => this.schedule(), 1000)
      }
    }
    for (const w of waiters) {
      try {
        w(result)
      } catch (e) {
        this.#broker.log.error('error after commit', { error: String((e as Error)?.stack ?? e) })
      }
    }
    // after a failed commit the held output stays held until a commit succeeds
    if (this.#held.size > 0 && result !== 'failed') {
      const held = this.#held
      this.#held = new Set()
      for (const conn of held) conn.flush(true)
    }
  }
}

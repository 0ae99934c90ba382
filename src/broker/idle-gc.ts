import type { Broker } from './broker.ts'

/** Traffic per second (bytes in + out, messages in + out, new connections) below which the
 * broker counts as idle: near zero, not merely light (a gateway at 500 msgs/s is busy). */
const IDLE_BYTES_PER_S = 16 * 1024
const IDLE_MESSAGES_PER_S = 20
const IDLE_CONNECTS_PER_S = 2
/** Seconds of idleness before a collection. */
const IDLE_TICKS = 5
/** RSS growth over the last settled value that makes an idle broker collect. */
const GROWTH = 32 * 1024 * 1024
/** At most one collection per this many ms. */
const MIN_INTERVAL_MS = 60_000
/** Ticks after a collection before RSS is taken as the new settled value (the allocator
 * returns freed pages after its purge delay, src/runtime.ts). */
const SETTLE_TICKS = 15

/** What the collector reads and calls: the runtime's, or a test's. */
export interface IdleGcHooks {
  rss(): number
  /** Bun.gc: false starts a collection without waiting for it (it runs concurrently). */
  gc(force: boolean): void
  now(): number
}

const RUNTIME: IdleGcHooks = { rss: () => process.memoryUsage.rss(), gc: (force) => Bun.gc(force), now: () => Date.now() }

/**
 * Returns memory to the OS after a burst. The garbage collector runs when JavaScript allocates:
 * a broker that falls idle after a burst allocates almost nothing, so the buffers of the burst
 * stay allocated (and their pages with the process) until traffic resumes. Once a second this
 * checks whether the broker has been idle (under 16 KiB/s, 20 messages/s and 2 new
 * connections/s) for 5 s while its RSS is 32 MiB above where it settled last; then it starts
 * one collection without waiting for it (Bun.gc(false): the collector marks concurrently, the
 * event loop is blocked a few ms, where Bun.gc(true) blocks it for the whole collection,
 * ~240-280 ms for a 600 MiB heap) and lets the allocator purge the freed pages. At most once a
 * minute. Costs nothing while traffic flows: the collector then runs anyway, driven by allocation.
 */
export class IdleCollector {
  readonly #broker: Broker
  readonly #hooks: IdleGcHooks
  #bytes = -1
  #connects = 0
  #msgs = 0
  #idle = 0
  #settled = 0
  #settling = 0
  #lastAt = -Infinity
  /** Collections started (since start). */
  collections = 0

  constructor(broker: Broker, hooks: IdleGcHooks = RUNTIME) {
    this.#broker = broker
    this.#hooks = hooks
  }

  /** Once a second. */
  tick(): void {
    const st = this.#broker.stats
    const bytes = st.bytesIn + st.bytesOut
    const msgs = st.msgsIn + st.msgsOut
    const busy = this.#bytes < 0 || bytes - this.#bytes > IDLE_BYTES_PER_S ||
      st.connectionsTotal - this.#connects > IDLE_CONNECTS_PER_S || msgs - this.#msgs > IDLE_MESSAGES_PER_S
    this.#bytes = bytes
    this.#connects = st.connectionsTotal
    this.#msgs = msgs
    this.#idle = busy ? 0 : this.#idle + 1
    const h = this.#hooks
    if (this.#settling > 0) {
      if (--this.#settling === 0) this.#settled = h.rss()
      return
    }
    const rss = h.rss()
    if (this.#settled === 0 || rss < this.#settled) this.#settled = rss
    const now = h.now()
    if (this.#idle < IDLE_TICKS || rss < this.#settled + GROWTH || now - this.#lastAt < MIN_INTERVAL_MS) return
    this.#lastAt = now
    const t = performance.now()
    h.gc(false)
    this.collections++
    this.#broker.log.info('idle after a burst: garbage collection started', { rss, settledRss: this.#settled, ms: Math.round(performance.now() - t) })
    this.#settling = SETTLE_TICKS
  }
}

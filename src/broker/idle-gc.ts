import type { Broker } from './broker.ts'

/** Traffic (bytes in + out per second) and new connections per second below which the
 * broker counts as quiet. */
const QUIET_BYTES_PER_S = 256 * 1024
const QUIET_CONNECTS_PER_S = 20
const QUIET_MESSAGES_PER_S = 1000
/** Seconds of quiet before a collection. */
const QUIET_TICKS = 2
/** RSS growth over the last settled value that makes a quiet broker collect. */
const GROWTH = 16 * 1024 * 1024
/** Ticks after a collection before RSS is taken as the new settled value (the allocator
 * returns freed pages after its purge delay, src/runtime.ts). */
const SETTLE_TICKS = 15

/**
 * Returns memory to the OS after a burst. The garbage collector runs when JavaScript allocates:
 * a broker that falls quiet after a burst allocates almost nothing, so the buffers of the burst
 * stay allocated (and their pages with the process) until traffic resumes. Once a second this
 * checks whether the broker is quiet (less than 256 KiB/s in and out, 1,000 messages/s and 20
 * new connections/s, for 2 s) while its RSS is 16 MiB above where it settled last: then it runs one full
 * collection (Bun.gc(true), a few ms to ~150 ms for a large heap, only while quiet) and lets
 * the allocator purge the freed pages.
 * Costs nothing while traffic flows: the collector then runs anyway, driven by allocation.
 */
export class IdleCollector {
  readonly #broker: Broker
  #bytes = -1
  #connects = 0
  #msgs = 0
  #quiet = 0
  #settled = 0
  #settling = 0
  /** Full collections run (since start). */
  collections = 0

  constructor(broker: Broker) {
    this.#broker = broker
  }

  /** Once a second. */
  tick(): void {
    const st = this.#broker.stats
    const bytes = st.bytesIn + st.bytesOut
    const msgs = st.msgsIn + st.msgsOut
    const busy = this.#bytes >= 0 && (bytes - this.#bytes > QUIET_BYTES_PER_S ||
      st.connectionsTotal - this.#connects > QUIET_CONNECTS_PER_S || msgs - this.#msgs > QUIET_MESSAGES_PER_S)
    this.#bytes = bytes
    this.#connects = st.connectionsTotal
    this.#msgs = msgs
    if (this.#settling > 0) {
      if (--this.#settling === 0) this.#settled = process.memoryUsage.rss()
      return
    }
    this.#quiet = busy ? 0 : this.#quiet + 1
    const rss = process.memoryUsage.rss()
    if (this.#settled === 0 || rss < this.#settled) this.#settled = rss
    if (this.#quiet < QUIET_TICKS || rss < this.#settled + GROWTH) return
    const t = performance.now()
    Bun.gc(true)
    this.collections++
    this.#broker.log.info('quiet after a burst: garbage collected', { rss, settledRss: this.#settled, ms: Math.round(performance.now() - t) })
    this.#settling = SETTLE_TICKS
  }
}

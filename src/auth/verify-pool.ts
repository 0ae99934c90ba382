import { availableParallelism } from 'node:os'

/** What VerifyPool.run resolves with when its queue is full. */
export const BUSY: unique symbol = Symbol('busy')

/**
 * A global cap on concurrent password verifications (argon2id: ~0.2 s of a core and 64 MiB
 * each, run on Bun's thread pool, off the event loop). Checks beyond `max` wait in order;
 * beyond `maxQueued` waiting ones, run() answers BUSY at once (the login is refused as server
 * busy) instead of letting memory and latency grow with the guessers.
 */
export class VerifyPool {
  readonly max: number
  readonly maxQueued: number
  #running = 0
  readonly #queue: (() => void)[] = []
  /** Checks from addresses with recent failures: served after every other waiting check. */
  readonly #later: (() => void)[] = []

  /** max 0: half the machine's cores, at least 1. */
  constructor(max: number, maxQueued: number) {
    this.max = max > 0 ? max : Math.max(1, Math.floor(availableParallelism() / 2))
    this.maxQueued = maxQueued
  }

  get running(): number {
    return this.#running
  }

  get queued(): number {
    return this.#queue.length + this.#later.length
  }

  /** Runs fn in a slot; `later`: after every waiting check that is not `later` (a suspect address). */
  async run<T>(fn: () => Promise<T>, later = false): Promise<T | typeof BUSY> {
    if (this.#running >= this.max) {
      if (this.queued >= this.maxQueued) return BUSY
      // the slot is handed over by the check that ends (running stays counted)
      await new Promise<void>((resolve) => (later ? this.#later : this.#queue).push(resolve))
    } else this.#running++
    try {
      return await fn()
    } finally {
      const next = this.#queue.shift() ?? this.#later.shift()
      if (next !== undefined) next()
      else this.#running--
    }
  }
}

import { availableParallelism } from 'node:os'

/** What VerifyPool.run resolves with when its queue is full. */
export const BUSY: unique symbol = Symbol('busy')

/** A waiting check: resumed with true when its slot is free, false when it was pushed out. */
interface Waiter {
  resume: (run: boolean) => void
  /** The check is no longer wanted (its connection closed): it is skipped, not run. */
  abandoned: (() => boolean) | undefined
}

/**
 * A global cap on concurrent password verifications (argon2id: ~0.2 s of a core and 64 MiB
 * each, run on Bun's thread pool, off the event loop). Checks beyond `max` wait in order, at
 * most `maxQueued` of them; beyond that run() answers BUSY at once (the login is refused as
 * server busy) instead of letting memory and latency grow with the guessers.
 *
 * Checks from suspect addresses (`later`: recent failures, or refused as busy) wait behind every
 * other one, and never cost a clean login its place: when the queue is full, a clean check
 * pushes out the oldest waiting suspect check (which answers BUSY), so guessers from many
 * addresses cannot lock real users out; with no suspect check waiting, it pushes out the oldest
 * clean one. Clean checks are served newest first: under overload the oldest ones are those
 * closest to their connect timeout, and a burst of first logins from many addresses does not
 * keep a later one waiting behind all of them (each address gets one such first login a
 * minute: its next ones, after a failure or a busy refusal, are suspect). A check whose
 * connection closed while it waited is dropped unrun.
 */
export class VerifyPool {
  readonly max: number
  readonly maxQueued: number
  #running = 0
  readonly #queue: Waiter[] = []
  /** Checks from suspect addresses: served in order after every other waiting check. */
  readonly #later: Waiter[] = []

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

  /**
   * Runs fn in a slot; `later`: after every waiting check that is not `later` (a suspect
   * address). `abandoned`: asked before fn starts; true skips it (resolves BUSY, no work).
   */
  async run<T>(fn: () => Promise<T>, later = false, abandoned?: () => boolean): Promise<T | typeof BUSY> {
    if (this.#running >= this.max) {
      if (this.queued >= this.maxQueued && !this.#makeRoom(later)) return BUSY
      // the slot is handed over by the check that ends (running stays counted)
      const run = await new Promise<boolean>((resume) => (later ? this.#later : this.#queue).push({ resume, abandoned }))
      if (!run) return BUSY
    } else if (abandoned?.() === true) return BUSY
    else this.#running++
    try {
      return await fn()
    } finally {
      this.#next()
    }
  }

  /** Hands the slot of a check that ended to the next waiting one that is still wanted. */
  #next(): void {
    for (;;) {
      const w = this.#queue.pop() ?? this.#later.shift()
      if (w === undefined) { this.#running--; return }
      if (w.abandoned?.() === true) { w.resume(false); continue }
      w.resume(true)
      return
    }
  }

  /** The queue is full: drops waiting checks whose connection closed, then (for a clean check)
   * pushes out the oldest suspect one, or else the oldest clean one (the last it would serve).
   * True when there is room now. */
  #makeRoom(later: boolean): boolean {
    for (const q of [this.#queue, this.#later]) {
      for (let i = q.length - 1; i >= 0; i--) {
        const w = q[i]!
        if (w.abandoned?.() === true) { q.splice(i, 1); w.resume(false) }
      }
    }
    if (this.queued < this.maxQueued) return true
    if (later) return false
    const out = this.#later.shift() ?? this.#queue.shift()
    if (out === undefined) return false
    out.resume(false)
    return true
  }
}

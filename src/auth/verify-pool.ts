import { availableParallelism } from 'node:os'

/** What VerifyPool.run resolves with when its queue is full. */
export const BUSY: unique symbol = Symbol('busy')

/** A waiting check: resumed with true when its slot is free, false when it was pushed out. */
interface Waiter {
  resume: (run: boolean) => void
  /** The check is no longer wanted (its connection closed): it is skipped, not run. */
  abandoned: (() => boolean) | undefined
  /** Drops the check (busy) when it has not started in time; undefined: no deadline. */
  timer: ReturnType<typeof setTimeout> | undefined
}

/** The order of a check: a user known to log in from there, any other, a suspect address. */
export type Lane = 'trusted' | 'clean' | 'suspect'

/** A check that has not started this long before its deadline is answered busy: the answer must
 * reach the client before its connect timeout (a silent close would look like a failure). */
export const START_MARGIN_MS = 500

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
 *
 * Checks of a user from an address (or /24, /64) where that user logged in recently (`trusted`,
 * see LoginGate) are served before all others, and only other trusted checks push them out: a
 * stream of first logins from ever new addresses (one guess each, e.g. from rotating IPv6 /64s)
 * would otherwise always win against the real users. A check that has not started by its
 * deadline minus START_MARGIN_MS answers BUSY (a CONNACK "server busy" instead of the connect
 * timeout's silent close).
 */
export class VerifyPool {
  readonly max: number
  readonly maxQueued: number
  #running = 0
  readonly #queue: Waiter[] = []
  /** Checks from suspect addresses: served in order after every other waiting check. */
  readonly #later: Waiter[] = []
  /** Checks of users where they logged in recently: served first, newest first. */
  readonly #trusted: Waiter[] = []

  /** max 0: half the machine's cores, at least 1. */
  constructor(max: number, maxQueued: number) {
    this.max = max > 0 ? max : Math.max(1, Math.floor(availableParallelism() / 2))
    this.maxQueued = maxQueued
  }

  get running(): number {
    return this.#running
  }

  get queued(): number {
    return this.#queue.length + this.#later.length + this.#trusted.length
  }

  /**
   * Runs fn in a slot, in the order of its lane. `abandoned`: asked before fn starts; true skips
   * it (resolves BUSY, no work). `deadline` (ms since the epoch, 0: none): a check still waiting
   * START_MARGIN_MS before it resolves BUSY.
   */
  async run<T>(fn: () => Promise<T>, lane: Lane = 'clean', abandoned?: () => boolean, deadline = 0): Promise<T | typeof BUSY> {
    if (this.#running >= this.max) {
      if (this.queued >= this.maxQueued && !this.#makeRoom(lane)) return BUSY
      const q = lane === 'trusted' ? this.#trusted : lane === 'clean' ? this.#queue : this.#later
      // the slot is handed over by the check that ends (running stays counted)
      const run = await new Promise<boolean>((resume) => {
        const w: Waiter = { resume, abandoned, timer: undefined }
        if (deadline > 0) {
          w.timer = setTimeout(() => {
            const i = q.indexOf(w)
            if (i >= 0) { q.splice(i, 1); resume(false) }
          }, Math.max(0, deadline - START_MARGIN_MS - Date.now()))
        }
        q.push(w)
      })
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
      const w = this.#trusted.pop() ?? this.#queue.pop() ?? this.#later.shift()
      if (w === undefined) { this.#running--; return }
      if (w.timer !== undefined) clearTimeout(w.timer)
      if (w.abandoned?.() === true) { w.resume(false); continue }
      w.resume(true)
      return
    }
  }

  /** The queue is full: drops waiting checks whose connection closed, then pushes out the
   * oldest waiting check of a lower lane (suspect, then clean), or of its own lane (the last it
   * would serve) unless it is suspect. True when there is room now. */
  #makeRoom(lane: Lane): boolean {
    for (const q of [this.#trusted, this.#queue, this.#later]) {
      for (let i = q.length - 1; i >= 0; i--) {
        const w = q[i]!
        if (w.abandoned?.() === true) { q.splice(i, 1); this.#drop(w) }
      }
    }
    if (this.queued < this.maxQueued) return true
    if (lane === 'suspect') return false
    const out = this.#later.shift() ?? this.#queue.shift() ?? (lane === 'trusted' ? this.#trusted.shift() : undefined)
    if (out === undefined) return false
    this.#drop(out)
    return true
  }

  #drop(w: Waiter): void {
    if (w.timer !== undefined) clearTimeout(w.timer)
    w.resume(false)
  }
}

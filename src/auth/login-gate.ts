import { isIP } from 'node:net'

/** Failed logins of an address and username are forgotten after this long without a failure. */
const USER_MEMORY_MS = 10 * 60_000
/** The address part is forgotten sooner: it also delays everyone else behind the same NAT. */
const ADDRESS_MEMORY_MS = 60_000
const MAX_TRACKED = 100_000
/** Checks running at once for one address: without recent failures, and with. */
const MAX_CHECKS_PER_ADDRESS = 2
const MAX_CHECKS_AFTER_FAILURE = 1
/** Logins from one address that may wait for their turn; more are refused as busy at once. */
const MAX_WAITING_PER_ADDRESS = 16
/** A user's successful login makes its later checks from that network trusted for this long. */
const TRUST_MS = 24 * 3600_000
/** Trusted-lane checks one username may have at once; more go to the clean lane (one stolen or
 * looping credential cannot keep every other login waiting). */
const MAX_TRUSTED_PER_USER = 2
/**
 * Busy refusals within a minute after which an address is a suspect. Not the first: a busy
 * refusal may be caused only by others' load (a flood of first logins from fresh addresses), and
 * a real device that retries must not then lose its place. A guesser that keeps retrying after
 * busy is a suspect from its third refusal, or at once when it had other logins in flight from
 * the same address (guessing in parallel).
 */
const BUSY_SUSPECT = 3

/** The failed-login key of an address: IPv4 as is, IPv6 by its /64 (one host's usual share). */
export function addressKey(address: string): string {
  const a = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
  if (isIP(a) !== 6) return a
  const [head = '', tail = ''] = a.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === '' ? [] : tail.split(':')
  const groups = a.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`
}

/** The network a successful login vouches for: an IPv4 /24 or an IPv6 /64. */
function networkKey(address: string): string {
  const k = addressKey(address)
  return isIP(k) === 4 ? `${k.slice(0, k.lastIndexOf('.'))}.0/24` : k
}

interface Failures {
  count: number
  /** Last failure (ms since the epoch). */
  at: number
  /** No new check for this key starts before this time (the failure's delay). */
  until: number
}

interface AddressState extends Failures {
  key: string
  /** Last login refused as busy (ms since the epoch; 0: none): the address is a suspect for a while. */
  busyAt: number
  /** Busy refusals since the last one that was more than a minute earlier (see BUSY_SUSPECT). */
  busies: number
  /** Checks from this address running now. */
  running: number
  waiting: (() => void)[]
}

export interface LoginGateOptions {
  /** First failure delay (ms); doubles with each further failure of the address and username. */
  failDelay: number
  /** Longest delay for one address and username. */
  failDelayMax: number
  /** Longest delay every login from an address with recent failures gets (any username). */
  failDelayAddressMax: number
}

/** A turn to check credentials; call done() when the check is over. */
export interface LoginTurn {
  /** The address had recent failures when the turn began (its check may wait behind others). */
  readonly suspect: boolean
  /** Not suspect, and the user logged in from this /24 (/64) within TRUST_MS: checked first. */
  readonly trusted: boolean
  done(): void
}

/**
 * Failed-login delays and the order of checks, per address and username. A failure delays the
 * answer by failDelay, doubling per failure of the same address and username (up to
 * failDelayMax), and by a small per-address part (up to failDelayAddressMax, for guessers
 * that try many usernames): other users behind the same address wait at most that. A success
 * waits as long as a failure of its key would (a guesser cannot stop waiting early), and a
 * failure for an unknown user takes as long as a wrong password.
 *
 * Before any hashing, turn() applies the same limits: a key or address inside its failure
 * delay waits for it, and an address runs at most two checks at a time (one once it has recent
 * failures), the others waiting in order (at most MAX_WAITING_PER_ADDRESS; beyond that, or when
 * the wait would pass the deadline: busy). Guessers in parallel from one address thus get no
 * more password verifications than one guesser.
 */
export class LoginGate {
  readonly #users = new Map<string, Failures>()
  readonly #addresses = new Map<string, AddressState>()
  /** "username network" -> last successful login (ms); in order of last use, oldest first. */
  readonly #trust = new Map<string, number>()
  /** Trusted-lane turns in progress, per username. */
  readonly #trustedNow = new Map<string, number>()
  readonly #o: LoginGateOptions

  constructor(o: LoginGateOptions) {
    this.#o = o
  }

  /**
   * Waits until a check for `username` from `address` may start. Resolves null (refuse as
   * busy) when the wait would pass `deadline` (ms since the epoch) or too many are waiting.
   */
  async turn(address: string, username: string | undefined, deadline: number): Promise<LoginTurn | null> {
    const akey = addressKey(address)
    const a = this.#fresh(this.#addresses, akey, ADDRESS_MEMORY_MS) ??
      this.#add(this.#addresses, akey, { key: akey, busyAt: 0, busies: 0, count: 0, at: 0, until: 0, running: 0, waiting: [] })
    if (a.running >= this.#limit(a)) {
      if (a.waiting.length >= MAX_WAITING_PER_ADDRESS) return null
      // the slot is handed over by #release (running stays counted)
      await new Promise<void>((resolve) => a.waiting.push(resolve))
    } else a.running++
    const u = this.#fresh(this.#users, `${akey} ${username ?? ''}`, USER_MEMORY_MS)
    const wait = Math.max(a.until, u?.until ?? 0) - Date.now()
    if (wait > 0 && Date.now() + wait > deadline) { this.#release(a); return null }
    if (wait > 0) await Bun.sleep(wait)
    let released = false
    const suspect = a.count > 0 || (a.busies >= BUSY_SUSPECT && Date.now() - a.busyAt < ADDRESS_MEMORY_MS)
    const trusted = !suspect && username !== undefined && (this.#trustedNow.get(username) ?? 0) < MAX_TRUSTED_PER_USER &&
      Date.now() - (this.#trust.get(`${username} ${networkKey(address)}`) ?? 0) < TRUST_MS
    if (trusted) this.#trustedNow.set(username, (this.#trustedNow.get(username) ?? 0) + 1)
    return {
      suspect, trusted, done: () => {
        if (released) return
        released = true
        this.#release(a)
        if (!trusted) return
        const n = (this.#trustedNow.get(username) ?? 1) - 1
        if (n > 0) this.#trustedNow.set(username, n)
        else this.#trustedNow.delete(username)
      },
    }
  }

  /**
   * The delay (ms) before answering a login, recording a failure when `failed`; a success clears
   * the failures of its address and username (not those of the address).
   */
  delay(address: string, username: string | undefined, failed: boolean): number {
    const now = Date.now()
    const akey = addressKey(address)
    const ukey = `${akey} ${username ?? ''}`
    let a = this.#fresh(this.#addresses, akey, ADDRESS_MEMORY_MS)
    let u = this.#fresh(this.#users, ukey, USER_MEMORY_MS)
    if (!failed) {
      if (u !== undefined) this.#users.delete(ukey)
      if (username !== undefined) this.#trusted(`${username} ${networkKey(address)}`, now)
      // as long as a failure would take, so that a guesser learns nothing from waiting
      // (an address entry without failures: checks running, or a recent busy refusal)
      return (a === undefined || a.count === 0) && u === undefined ? 0 : this.#delay((u?.count ?? 0) + 1, (a?.count ?? 0) + 1)
    }
    // a failure for this user from its trusted network ends the trust: a neighbour in the same
    // /24 or /64 guessing its password does not keep the trusted lane
    if (username !== undefined) this.#trust.delete(`${username} ${networkKey(address)}`)
    a ??= this.#add(this.#addresses, akey, { key: akey, busyAt: 0, busies: 0, count: 0, at: now, until: 0, running: 0, waiting: [] })
    u ??= this.#add(this.#users, ukey, { count: 0, at: now, until: 0 })
    a.count++
    u.count++
    a.at = u.at = now
    const d = this.#delay(u.count, a.count)
    a.until = now + this.#addressDelay(a.count)
    u.until = now + d
    return d
  }

  /**
   * A login from `address` was refused as busy. From its BUSY_SUSPECT-th refusal within a minute
   * (at once when other logins from it were in flight), its next logins count as a suspect's
   * (checked after every other waiting one) for a minute, without any delay: a guesser that
   * retries at once after busy cannot take the place of a first login from another address.
   */
  busy(address: string): void {
    const now = Date.now()
    const akey = addressKey(address)
    const a = this.#fresh(this.#addresses, akey, ADDRESS_MEMORY_MS) ??
      this.#add(this.#addresses, akey, { key: akey, busyAt: 0, busies: 0, count: 0, at: now, until: 0, running: 0, waiting: [] })
    if (now - a.busyAt >= ADDRESS_MEMORY_MS) a.busies = 0
    a.busies += a.running > 0 ? BUSY_SUSPECT : 1
    a.busyAt = a.at = now
  }

  /** Records a successful login of a user from a network (bounded: the oldest is forgotten). */
  #trusted(key: string, now: number): void {
    this.#trust.delete(key)
    if (this.#trust.size >= MAX_TRACKED) this.#trust.delete(this.#trust.keys().next().value!)
    this.#trust.set(key, now)
  }

  /** Forgets old failures (also called from the broker's periodic sweep). */
  prune(now = Date.now()): void {
    for (const [k, f] of this.#users) if (now - f.at >= USER_MEMORY_MS) this.#users.delete(k)
    for (const [k, f] of this.#addresses) if (now - f.at >= ADDRESS_MEMORY_MS && f.running === 0) this.#addresses.delete(k)
    for (const [k, at] of this.#trust) {
      if (now - at < TRUST_MS) break
      this.#trust.delete(k)
    }
  }

  /** The answer delay after `users` failures of the address and username and `addresses` of the address. */
  #delay(users: number, addresses: number): number {
    return Math.max(this.#grow(users, this.#o.failDelayMax), this.#addressDelay(addresses))
  }

  #addressDelay(count: number): number {
    return this.#grow(count, Math.min(this.#o.failDelayAddressMax, this.#o.failDelayMax))
  }

  /** failDelay doubled per failure after the first, capped at max. */
  #grow(count: number, max: number): number {
    if (this.#o.failDelay === 0) return 0
    return Math.min(max, this.#o.failDelay * 2 ** Math.min(Math.max(count - 1, 0), 30))
  }

  #limit(a: AddressState): number {
    return a.count > 0 ? MAX_CHECKS_AFTER_FAILURE : MAX_CHECKS_PER_ADDRESS
  }

  /** A check of the address is over: the next waiting one takes its slot if the limit allows. */
  #release(a: AddressState): void {
    if (a.waiting.length > 0 && a.running <= this.#limit(a)) {
      a.waiting.shift()!()
      return
    }
    a.running--
    // an address without failures is tracked only while it has checks running
    if (a.running === 0 && a.count === 0 && a.busyAt === 0 && this.#addresses.get(a.key) === a) this.#addresses.delete(a.key)
  }

  /** The entry for key unless its failures are older than `memory` (then it is dropped). */
  #fresh<T extends Failures>(map: Map<string, T>, key: string, memory: number): T | undefined {
    const f = map.get(key)
    if (f === undefined || Date.now() - f.at < memory) return f
    // an address entry with checks running stays until they are over
    if ('running' in f && (f.running as number) > 0) return f
    map.delete(key)
    return undefined
  }

  #add<T extends Failures>(map: Map<string, T>, key: string, f: T): T {
    if (map.size >= MAX_TRACKED) this.prune()
    // still full: forget the oldest entry (a Map iterates in insertion order)
    if (map.size >= MAX_TRACKED) map.delete(map.keys().next().value!)
    map.set(key, f)
    return f
  }
}

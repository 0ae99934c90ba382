import { appendFileSync, chmodSync, existsSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'

/** Security events the audit log records. */
export type AuditEvent =
  | 'connect'        // a CONNECT accepted
  | 'connect-failed' // a CONNECT refused (reason code, why)
  | 'acl-denied'     // a publish or subscribe refused by the ACL
  | 'kick'           // a connection closed by the broker: takeover, admin, limits
  | 'admin'          // an admin API action
  | 'reload'         // configuration files re-read (ok or failed)

export interface AuditFields {
  clientId?: string | undefined
  username?: string | undefined
  address?: string | undefined
  listener?: string | undefined
  [key: string]: unknown
}

/** Longest string field an audit or log line keeps (a client id or topic can be 64 KiB). */
const MAX_FIELD = 512

/** A string field cut to MAX_FIELD characters, marked with … when cut. */
export const clip = (v: string | undefined): string | undefined => v !== undefined && v.length > MAX_FIELD ? `${v.slice(0, MAX_FIELD)}…` : v

/** The identity fields of an audit line for a connection: client id, username, address, listener. */
export function identity(c: { clientId: string; username: string | undefined; listener: string; socket: { readonly remoteAddress: string } }): AuditFields {
  return { clientId: clip(c.clientId) || undefined, username: clip(c.username), address: c.socket.remoteAddress, listener: c.listener }
}
const DENIALS_PER_SECOND = 10
/** Keys a Throttle remembers (an address flood must not grow it without end). */
const MAX_THROTTLE_KEYS = 10_000
/** The key new keys share while a Throttle is full of live ones. */
const OVERFLOW_KEY = '\u0000overflow'

/**
 * At most `perSecond` lines per key per second (a key: an address, a quota name). take()
 * answers -1 when this line should be left out, else how many were left out before it (for
 * a `suppressed` field), so a flood of refusals writes a few lines a second, not one each.
 */
export class Throttle {
  readonly perSecond: number
  readonly maxKeys: number
  #keys = new Map<string, { at: number; lines: number; suppressed: number }>()
  #sweptAt = 0

  constructor(perSecond = DENIALS_PER_SECOND, maxKeys = MAX_THROTTLE_KEYS) {
    this.perSecond = perSecond
    this.maxKeys = maxKeys
  }

  /**
   * When full, keys whose second has passed with nothing left out are forgotten (at most one
   * sweep a second); while it is still full, new keys share one entry. A flood of new
   * addresses never resets the throttle of another address.
   */
  take(key: string, now = Date.now()): number {
    let t = this.#keys.get(key)
    if (t === undefined) {
      const keys = this.#keys
      if (keys.size >= this.maxKeys && now - this.#sweptAt >= 1000) {
        this.#sweptAt = now
        for (const [k, v] of keys) if (now - v.at >= 1000 && v.suppressed === 0 && k !== OVERFLOW_KEY) keys.delete(k)
      }
      if (keys.size >= this.maxKeys) key = OVERFLOW_KEY
      t = keys.get(key)
      if (t === undefined) keys.set(key, t = { at: now, lines: 0, suppressed: 0 })
    }
    if (now - t.at >= 1000) { t.at = now; t.lines = 0 }
    if (t.lines >= this.perSecond) { t.suppressed++; return -1 }
    t.lines++
    const n = t.suppressed
    t.suppressed = 0
    return n
  }
}

/**
 * The audit log: one JSON object per line (time, event, client id, username, peer address,
 * listener, and what happened), to a file (appended, created with its directory) or stdout.
 * Never includes passwords or tokens.
 */
export class AuditLog {
  readonly target: string
  #write: (line: string) => void
  #throttle = new WeakMap<object, { at: number; lines: number; suppressed: number }>()

  /** target: '' (off), 'stdout', or a file path. Throws when the file cannot be opened. */
  constructor(target: string) {
    this.target = target
    if (target === '') this.#write = () => {}
    else if (target === 'stdout') this.#write = (l) => { process.stdout.write(l) }
    else {
      try {
        mkdirSync(dirname(target), { recursive: true })
        // readable by its owner only, whatever the umask: it names users and addresses
        const created = !existsSync(target)
        appendFileSync(target, '', { mode: 0o600 })
        if (created) chmodSync(target, 0o600)
      } catch (e) {
        throw new Error(`audit log ${target}: cannot open for appending (${(e as Error).message})`)
      }
      // synchronous appends: events are rare (a connect, a denial) and must not be lost on a crash
      this.#write = (l) => {
        try { appendFileSync(target, l) } catch { /* a full disk must not stop the broker */ }
      }
    }
  }

  get enabled(): boolean {
    return this.target !== ''
  }

  event(event: AuditEvent, fields: AuditFields): void {
    if (this.target === '') return
    // a topic or client id can be 64 KiB: the line keeps the start of each field
    for (const k in fields) {
      const v = fields[k]
      if (typeof v === 'string' && v.length > MAX_FIELD) fields = { ...fields, [k]: clip(v) }
    }
    this.#write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`)
  }

  /**
   * An ACL denial of `who` (a connection): at most DENIALS_PER_SECOND lines per second per
   * connection; the next line says how many were left out, so a client cannot flood the log.
   */
  denied(who: object, fields: AuditFields): void {
    if (this.target === '') return
    const now = Date.now()
    let t = this.#throttle.get(who)
    if (t === undefined) this.#throttle.set(who, t = { at: now, lines: 0, suppressed: 0 })
    if (now - t.at >= 1000) { t.at = now; t.lines = 0 }
    if (t.lines >= DENIALS_PER_SECOND) { t.suppressed++; return }
    t.lines++
    this.event('acl-denied', t.suppressed > 0 ? { ...fields, suppressed: t.suppressed } : fields)
    t.suppressed = 0
  }
}

import { appendFileSync, mkdirSync } from 'node:fs'
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

const MAX_TOPIC = 512

/** The identity fields of an audit line for a connection: client id, username, address, listener. */
export function identity(c: { clientId: string; username: string | undefined; listener: string; socket: { readonly remoteAddress: string } }): AuditFields {
  return { clientId: c.clientId || undefined, username: c.username, address: c.socket.remoteAddress, listener: c.listener }
}
const DENIALS_PER_SECOND = 10

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
        appendFileSync(target, '')
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
    const topic = fields.topic
    // a topic can be 64 KiB: the log keeps its start
    if (typeof topic === 'string' && topic.length > MAX_TOPIC) fields = { ...fields, topic: `${topic.slice(0, MAX_TOPIC)}…` }
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

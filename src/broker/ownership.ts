import { RC } from '../codec/reason-codes.ts'
import type { Session } from '../session/session.ts'
import type { Will } from '../session/types.ts'
import { clip, identity } from '../auth/audit.ts'
import { UNKNOWN_ADDRESS, UNKNOWN_ADDRESS_STRICT } from '../auth/acl.ts'
import type { Broker } from './broker.ts'
import type { Connection } from './connection.ts'

/** Why a CONNECT may not have the session its client id names. */
export interface Refusal {
  code: number
  /** For the client (v5 Reason String): says nothing about other users. */
  reason: string
  /** For the log and the audit log. */
  detail: string
}

/**
 * Who owns which session: a session belongs to the username that made it (undefined for an
 * anonymous client), and the number of sessions each username holds is counted for
 * limits.maxSessionsPerUser. Anonymous sessions are not counted (they have no one to count
 * against; maxConnections and the per-address limits bound them).
 */
export class SessionOwners {
  #counts = new Map<string, number>()

  /** Records `user` as the owner of `s` (a new session, or one taken over across users). */
  own(s: Session, user: string | undefined): void {
    if (s.owner === user) return
    this.release(s)
    s.owner = user
    if (user !== undefined) this.#counts.set(user, (this.#counts.get(user) ?? 0) + 1)
  }

  /** The session ended (or changes hands): it no longer counts for its owner. */
  release(s: Session): void {
    const user = s.owner
    if (user === undefined) return
    s.owner = undefined
    const n = (this.#counts.get(user) ?? 1) - 1
    if (n <= 0) this.#counts.delete(user)
    else this.#counts.set(user, n)
  }

  count(user: string): number {
    return this.#counts.get(user) ?? 0
  }
}

/**
 * Before a CONNECT takes the session of its client id: another user's session is refused (v5
 * 0x87, v3 5) unless session.takeoverAcrossUsers; a user at limits.maxSessionsPerUser cannot
 * make one more (v5 0x97, v3 3). Nothing is kicked or deleted before this passes.
 */
export function checkOwnership(conn: Connection): Refusal | null {
  const broker = conn.broker
  const cfg = broker.config
  const s = broker.sessions.get(conn.clientId)
  const user = conn.username
  const live = s !== undefined && s.expiresAt() > Date.now()
  // an anonymous session is anyone's; a user's session is only that user's
  if (live && s.owner !== undefined && s.owner !== user && !cfg.session.takeoverAcrossUsers) {
    return {
      code: RC.NOT_AUTHORIZED, reason: 'not authorized',
      detail: `client id ${conn.clientId} names a session of another user (session.takeoverAcrossUsers is off)`,
    }
  }
  const max = cfg.limits.maxSessionsPerUser
  if (max > 0 && user !== undefined && !(s !== undefined && s.owner === user)) {
    const held = broker.sessionOwners.count(user)
    if (held >= max) {
      return { code: RC.QUOTA_EXCEEDED, reason: 'too many sessions for this user', detail: `user ${user} holds ${held} sessions (limits.maxSessionsPerUser ${max})` }
    }
  }
  return null
}

/** After the ACL rules changed: a connected client's will that the rules no longer allow is
 * dropped (logged and audited). Returns false when it dropped one (the session record changes). */
export function recheckWill(broker: Broker, conn: Connection): boolean {
  const will = conn.will
  if (will === null || broker.security === null || broker.security.authorize(conn, 'publish', will.msg.topic)) return true
  conn.will = null
  broker.log.info('will dropped: the ACL no longer allows its topic', { clientId: conn.clientId, topic: will.msg.topic })
  broker.security.audit.event('acl-denied', { ...identity(conn), action: 'will dropped on reload', topic: will.msg.topic })
  return false
}

/**
 * The pending (delayed) will of a disconnected session, checked against the ACL when the rules
 * change and again when it is published: with its client's identity as last seen (its session's
 * reader; after a restart, the stored owner and an unknown address). A denied will is dropped,
 * logged and audited; `when` says at which point. Without an ACL every will passes.
 */
export function pendingWillAllowed(broker: Broker, s: Session, will: Will, when: 'on reload' | 'at publication'): boolean {
  const sec = broker.security
  const r = s.reader
  if (sec === null || r === null) return true
  // a restored session's address is unknown: `ip:` rules as the worst case for a will, which is
  // not checked again once published (reads take the best case: they are, on the way out)
  const who = r.socket.remoteAddress !== UNKNOWN_ADDRESS ? r
    : { clientId: r.clientId, username: r.username, acl: r.acl, socket: { remoteAddress: UNKNOWN_ADDRESS_STRICT } }
  if (sec.authorize(who, 'publish', will.msg.topic)) return true
  broker.log.info('will dropped: the ACL does not allow its topic', { clientId: s.clientId, topic: will.msg.topic, when })
  sec.audit.event('acl-denied', {
    clientId: clip(s.clientId) || undefined, username: clip(r.username), address: r.socket.remoteAddress || undefined,
    action: `pending will dropped ${when}`, topic: will.msg.topic,
  })
  return false
}

/** Users removed from the password file lose their connections: v5 DISCONNECT 0x87, audited. */
export function dropRemovedUsers(broker: Broker, users: string[]): void {
  const gone = new Set(users)
  for (const conn of broker.allConnections()) {
    if (conn.state !== 'connected' || conn.username === undefined || !gone.has(conn.username)) continue
    broker.log.info('closing connection: user removed from the password file', { clientId: conn.clientId, username: conn.username })
    broker.security?.audit.event('kick', { ...identity(conn), reason: 'user removed from the password file' })
    conn.disconnect(RC.NOT_AUTHORIZED, 'user removed from the password file')
  }
}

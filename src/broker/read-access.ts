/**
 * Read access per delivered message (the ACL's subscribe rules, topic by topic). A session
 * whose client an ACL restricts has a `reader`: who its messages go to. Route checks it once
 * per topic and subscription (cached with the topic's match list), and every other way a
 * message reaches a client checks it too: retained messages on subscribe, queued messages
 * when they leave the queue, unacknowledged ones resent on resumption. Without an ACL no
 * session has a reader and nothing is checked.
 */
import type { Principal } from '../auth/security.ts'
import type { Session } from '../session/session.ts'
import type { Subscription } from '../session/types.ts'
import type { Broker } from './broker.ts'

/** Whether the session's client may read a message on `topic` (true without an ACL). */
export function mayRead(broker: Broker, s: Session, topic: string): boolean {
  const r = s.reader
  return r === null || broker.security === null || broker.security.authorize(r, 'read', topic)
}

/** Per subscription of a topic's match list: 1 when its client may read the topic. */
export function readableFlags(broker: Broker, topic: string, subs: Subscription[]): Uint8Array {
  const out = new Uint8Array(subs.length)
  for (let i = 0; i < subs.length; i++) {
    const s = broker.sessions.get(subs[i]!.clientId)
    out[i] = s === undefined || mayRead(broker, s, topic) ? 1 : 0
  }
  return out
}

/**
 * Sets who reads a session's messages from its new connection (a copy: the session may
 * outlive the connection). A change drops the cached read decisions.
 */
export function setReader(broker: Broker, s: Session, conn: Principal): void {
  const sec = broker.security
  const old = s.reader
  if (sec === null || !sec.restricts(conn)) {
    s.reader = null
  } else {
    const address = conn.socket.remoteAddress
    if (old !== null && old.username === conn.username && old.acl === conn.acl && old.socket.remoteAddress === address) return
    s.reader = { clientId: conn.clientId, username: conn.username, acl: conn.acl, socket: { remoteAddress: address } }
    broker.readChecks = true
  }
  if (old !== s.reader) broker.matchCache.clear()
}

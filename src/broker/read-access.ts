/**
 * Read access per delivered message (the ACL's subscribe rules, topic by topic). A session
 * whose client an ACL restricts has a `reader`: who its messages go to. Route checks it once
 * per topic and subscription (cached with the topic's match list), and every other way a
 * message reaches a client checks it too: retained messages on subscribe, queued messages
 * when they leave the queue, unacknowledged ones resent on resumption. Without an ACL no
 * session has a reader and nothing is checked. The reader also keeps its client's publish
 * decisions per topic (a fan-out publisher would otherwise walk the rules for every message).
 */
import type { Principal, Security } from '../auth/security.ts'
import type { ClientAcl } from '../auth/types.ts'
import type { Session } from '../session/session.ts'
import type { Subscription } from '../session/types.ts'
import type { Broker } from './broker.ts'

/** Publish decisions kept per reader; past this many topics they are forgotten and made again. */
const PUBLISH_CACHE_MAX = 256

/** A copy of a restricted connection's identity (a session may outlive its connection). */
export class Reader implements Principal {
  readonly clientId: string
  readonly username: string | undefined
  readonly acl: ClientAcl | null
  readonly socket: { readonly remoteAddress: string }
  #published: Map<string, boolean> | null = null
  /** The rules version (Security.aclEpoch) the publish decisions were made under. */
  #epoch = 0

  constructor(who: Principal) {
    this.clientId = who.clientId
    this.username = who.username
    this.acl = who.acl
    this.socket = { remoteAddress: who.socket.remoteAddress }
  }

  /** Whether `who` would get the same ACL decisions. */
  same(who: Principal): boolean {
    return this.username === who.username && this.acl === who.acl && this.socket.remoteAddress === who.socket.remoteAddress
  }

  /** May this client publish to `topic` (cached per topic until the rules change). */
  mayPublish(sec: Security, topic: string): boolean {
    let cache = this.#published
    if (cache === null || this.#epoch !== sec.aclEpoch) {
      cache = this.#published = new Map()
      this.#epoch = sec.aclEpoch
    }
    let v = cache.get(topic)
    if (v === undefined) {
      v = sec.authorize(this, 'publish', topic)
      if (cache.size >= PUBLISH_CACHE_MAX) cache.clear()
      cache.set(topic, v)
    }
    return v
  }
}

/** May the client of this connection publish to `topic` (its session's reader caches it). */
export function mayPublish(sec: Security, conn: Principal & { session: { reader: Reader | null } | null }, topic: string): boolean {
  const r = conn.session?.reader ?? null
  return r !== null ? r.mayPublish(sec, topic) : sec.authorize(conn, 'publish', topic)
}

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
    if (old !== null && old.same(conn)) return
    s.reader = new Reader(conn)
    broker.readChecks = true
  }
  // only a session with subscriptions is in any cached match list
  if (old !== s.reader && s.subscriptionCount > 0) broker.matchCache.clear()
}

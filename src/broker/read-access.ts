/**
 * Read access per delivered message (the ACL's subscribe rules, topic by topic). A session
 * whose client an ACL restricts has a `reader`: who its messages go to. Route checks it once
 * per topic and subscription (cached with the topic's match list), and every other way a
 * message reaches a client checks it too: retained messages on subscribe, queued messages
 * when they leave the queue, unacknowledged ones resent on resumption. Without an ACL no
 * session has a reader and nothing is checked. The reader also keeps its client's publish
 * decisions per topic (a fan-out publisher would otherwise walk the rules for every message).
 *
 * Cost: the reader compiles its client's read rules once per ACL version (read-rules.ts), and
 * each subscription keeps the part that overlaps its filter (`Subscription.read`), or nothing
 * when all its topics are readable: then its messages are not checked at all. A topic is
 * split once per message for all subscriptions that need a check.
 *
 * A session restored after a restart gets a reader from its stored owner and client id before
 * its client returns (restoreReader); the address is unknown then, and `ip:` rules are taken as
 * the worst case (acl.ts whoMatches): its offline queue only takes messages every address of
 * that user may read, so a message it might not read never pushes out one it may.
 */
import type { Principal, Security } from '../auth/security.ts'
import { UNKNOWN_ADDRESS } from '../auth/acl.ts'
import { compileRead, readAllowed, scopeOf, type ReadRules } from '../auth/read-rules.ts'
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
  #read: ReadRules | null = null
  #readEpoch = 0
  #publish: ReadRules | null = null

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
      this.#publish = compileRead(sec.acl?.rules ?? null, this.acl, this.#who(), 'publish')
    }
    let v = cache.get(topic)
    if (v === undefined) {
      // a topic name the PUBLISH handler validated: non-empty, no wildcards
      v = readAllowed(this.#publish!, topic.split('/'))
      if (cache.size >= PUBLISH_CACHE_MAX) cache.clear()
      cache.set(topic, v)
    }
    return v
  }

  /** The rules that can decide what this client reads (compiled once per rules version). */
  readRules(sec: Security): ReadRules {
    let r = this.#read
    if (r === null || this.#readEpoch !== sec.aclEpoch) {
      r = this.#read = compileRead(sec.acl?.rules ?? null, this.acl, this.#who())
      this.#readEpoch = sec.aclEpoch
    }
    return r
  }

  #who(): { clientId: string; username: string | undefined; address: string } {
    return { clientId: this.clientId, username: this.username, address: this.socket.remoteAddress }
  }

  /** The read rules for a subscription's topics, null when all are readable (kept on it). */
  scope(sec: Security, sub: Subscription): ReadRules | null {
    const v = sub.read
    if (v != null && v.reader === this && v.epoch === sec.aclEpoch) return v.rules
    const rules = scopeOf(this.readRules(sec), sub.filter.split('/'))
    sub.read = { reader: this, epoch: sec.aclEpoch, rules }
    return rules
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
  const sec = broker.security
  return r === null || sec === null || (topic.length > 0 && readAllowed(r.readRules(sec), topic.split('/')))
}

/** readableFlags' answer when every subscription may read the topic (no entry is 0). */
const ALL_READABLE = new Uint8Array(0)

/**
 * Per subscription of a topic's match list: 0 when its client may not read the topic (an
 * index past the end: it may). Subscriptions whose topics are all readable cost a lookup.
 */
export function readableFlags(broker: Broker, topic: string, subs: Subscription[]): Uint8Array {
  const sec = broker.security
  if (sec === null) return ALL_READABLE
  let levels: string[] | null = null
  let out: Uint8Array | null = null
  for (let i = 0; i < subs.length; i++) {
    const sub = subs[i]!
    const r = broker.sessions.get(sub.clientId)?.reader ?? null
    if (r === null) continue
    const rules = r.scope(sec, sub)
    if (rules === null || readAllowed(rules, levels ??= topic.split('/'))) continue
    if (out === null) out = new Uint8Array(subs.length).fill(1)
    out[i] = 0
  }
  return out ?? ALL_READABLE
}

/**
 * A restored session's reader, before its client returns: its stored owner and client id, the
 * address unknown (worst case for `ip:` rules). A token's topic lists are not stored: a client
 * restricted only by a token gets them back when it reconnects.
 */
export function restoreReader(broker: Broker, s: Session): void {
  const sec = broker.security
  if (sec === null || sec.acl === null) return
  s.reader = new Reader({ clientId: s.clientId, username: s.owner, acl: null, socket: { remoteAddress: UNKNOWN_ADDRESS } })
  broker.readChecks = true
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

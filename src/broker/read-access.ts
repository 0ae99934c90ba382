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
 * when all its topics are readable: then its messages are not checked at all. Most rules match
 * by string comparison (`a/b`, `a/#`, `#`); a topic is split once per message, only for rules
 * with `+`.
 *
 * A session restored after a restart gets a reader from its stored owner and client id before
 * its client returns (restoreReader); the address is unknown then, and `ip:` rules are taken as
 * the best case (acl.ts whoMatches): its offline queue takes every message that user could read
 * from some address, so nothing acknowledged for it is lost to a restart; the real address
 * decides when the messages go out.
 */
import type { Principal, Security } from '../auth/security.ts'
import { UNKNOWN_ADDRESS } from '../auth/acl.ts'
import { compileRead, nextGen, readAllowed, scopeOf, type ReadRules } from '../auth/read-rules.ts'
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
      v = readAllowed(this.#publish!, topic, null)
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
  return r === null || sec === null || (topic.length > 0 && readAllowed(r.readRules(sec), topic, null))
}

/** readableFlags' answer when every subscription may read the topic: all 1, shared, grown as needed. */
let allReadable = new Uint8Array(64).fill(1)

/**
 * Per subscription of a topic's match list: 1 when its client may read the topic. The array
 * may be longer than the list (when all may read it). Subscriptions whose topics are all
 * readable cost a lookup.
 */
export function readableFlags(broker: Broker, topic: string, subs: Subscription[]): Uint8Array {
  const sec = broker.security
  if (allReadable.length < subs.length) allReadable = new Uint8Array(subs.length * 2).fill(1)
  if (sec === null) return allReadable
  let levels: string[] | null = null
  let out: Uint8Array | null = null
  let gen = 0
  const epoch = sec.aclEpoch
  for (let i = 0; i < subs.length; i++) {
    const sub = subs[i]!
    const v = sub.read
    const rules = v != null && v.epoch === epoch ? v.rules : scope(broker, sec, sub)
    if (rules === null || readAllowed(rules, topic, rules.needsLevels ? (levels ??= topic.split('/')) : null, gen === 0 ? (gen = nextGen()) : gen)) continue
    if (out === null) out = new Uint8Array(subs.length).fill(1)
    out[i] = 0
  }
  return out ?? allReadable
}

/**
 * The read rules for a subscription's topics, null when all are readable (no reader, or no
 * deny rule reaches its filter); kept on it until the rules or its session's reader change.
 */
function scope(broker: Broker, sec: Security, sub: Subscription): ReadRules | null {
  const r = broker.sessions.get(sub.clientId)?.reader ?? null
  const rules = r === null ? null : scopeOf(r.readRules(sec), sub.filter.split('/'))
  sub.read = { epoch: sec.aclEpoch, rules }
  return rules
}

/**
 * A restored session's reader, before its client returns: its stored owner and client id, the
 * address unknown (best case for `ip:` rules, see whoMatches). A token's topic lists are not stored: a client
 * restricted only by a token gets them back when it reconnects.
 */
export function restoreReader(broker: Broker, s: Session): void {
  const sec = broker.security
  if (sec === null || sec.acl === null) return
  s.reader = new Reader({ clientId: s.clientId, username: s.owner, acl: null, socket: { remoteAddress: UNKNOWN_ADDRESS } })
  broker.readChecks = true
  for (const sub of s.subscriptionList()) sub.read = null
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
  if (old !== s.reader && s.subscriptionCount > 0) {
    broker.matchCache.clear()
    for (const sub of s.subscriptionList()) sub.read = null
  }
}

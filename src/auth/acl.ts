/**
 * ACL rules file and authorizer.
 *
 * Format (mosquitto-like, but ordered: the first rule that matches decides). One rule a line:
 *
 *     allow|deny  <who>  <action>  <topic-filter>
 *     default allow|deny            (at most once, anywhere; without it: deny)
 *     # a comment (whole lines only; blank lines are ignored)
 *
 * - who: `all`, or one or more of `user:<name>`, `client:<id>`, `ip:<address>[/<prefix>]`
 *   (IPv4 or IPv6) joined by `,` with no spaces; every condition must hold, e.g.
 *   `user:alice,ip:10.0.0.0/8`. An IPv4 rule also matches IPv4-mapped IPv6 addresses
 *   (::ffff:10.1.2.3). A client without a username never matches `user:`.
 * - action: `publish`, `subscribe` or `all`.
 * - topic-filter: the rest of the line (so it may contain inner spaces), a valid MQTT filter
 *   (`+`, `#`), never `$share/...` (rules see the filter without the share prefix). `%u` is
 *   replaced by the username and `%c` by the client id, anywhere in a level.
 *
 * Publish: the first rule (publish or all) whose filter matches the topic name decides.
 * Read (is a message on this topic delivered to this client): the first rule (subscribe or
 * all) whose filter matches the topic name decides. It is checked for every message a client
 * gets: live, retained, shared, queued and resent.
 * Subscribe (decided once at SUBSCRIBE, like Mosquitto): a filter is granted when some topic
 * it can match is readable, and refused only when none is. Rules are walked in order: a deny
 * rule whose filter covers the requested one (every topic the requested filter can match, the
 * rule's filter matches: `secret/#` covers `secret/+/x`) refuses it; an allow rule grants it
 * when the two filters overlap in topics that no earlier deny rule covers (`#` with `deny
 * secret/#`, `allow #`: granted, and messages on `secret/...` are not delivered). This never
 * refuses a filter through which some message could be delivered; it may grant one through
 * which none can (several deny rules that only together hide an allow), which costs nothing
 * since every message is checked.
 * [MQTT-4.7.2-1] a rule filter starting with `+` or `#` does not match (or cover, or overlap)
 * topics starting with `$`; `+/#` covers `#` (both match every non-$ topic).
 * Placeholders: a value that is missing, empty or contains `+`, `#` or `/` cannot widen a
 * rule: an allow rule then never matches, and a deny rule treats that level as `+` (denying
 * what it would deny for any value). An allow rule whose filter does not start with `$` never
 * matches when a value makes it start with `$` (username `$SYS` against `%u/#`).
 *
 * Example:
 *
 *     default deny
 *     deny  all                     all        secret/#
 *     allow user:admin              all        #
 *     allow all                     all        users/%u/#
 *     allow user:sensor,ip:10.0.0.0/8  publish  sensors/%c/+
 *     allow all                     subscribe  sensors/#
 */
import { BlockList, isIP } from 'node:net'
import { topicFilterError } from '../topic/validate.ts'
import type { AclRequest, ClientAcl, Decision } from './types.ts'
import { readText, WatchedFile, type WatchedFileOptions } from './watched-file.ts'

export type AclWho =
  | { kind: 'user'; name: string }
  | { kind: 'client'; id: string }
  | { kind: 'ip'; spec: string; list: BlockList }

export interface AclRule {
  decision: 'allow' | 'deny'
  /** Every condition must match; empty for `all`. */
  who: AclWho[]
  action: 'publish' | 'subscribe' | 'all'
  filter: string
  levels: string[]
  placeholders: boolean
  /** 1-based line in the rules file. */
  line: number
  /** The rule compiled for matching, when it has no placeholders (read-rules.ts; one per rule, shared by all clients). */
  compiled?: unknown
}

export interface AclRules {
  path: string
  rules: AclRule[]
  defaultDecision: 'allow' | 'deny'
}

/** Control characters are the broker's business (limits.allowControlCharacters), not the rules'. */
const LIMITS = { maxLength: 65535, maxLevels: 65535, allowControl: true }
const RULE = /^(\S+)\s+(\S+)\s+(\S+)\s+(.+)$/

/** Parses a rules file's text; throws `path:line: what is wrong`. */
export function parseAcl(text: string, path: string): AclRules {
  const rules: AclRule[] = []
  let defaultDecision: 'allow' | 'deny' | undefined
  let defaultLine = 0
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i]!.trim()
    if (t.length === 0 || t.startsWith('#')) continue
    const err = (what: string) => new Error(`${path}:${i + 1}: ${what}`)
    const words = t.split(/\s+/)
    if (words[0] === 'default') {
      if (words.length !== 2 || (words[1] !== 'allow' && words[1] !== 'deny')) throw err(`expected 'default allow' or 'default deny'`)
      if (defaultDecision !== undefined) throw err(`second 'default' line (first on line ${defaultLine})`)
      defaultDecision = words[1]
      defaultLine = i + 1
      continue
    }
    const m = RULE.exec(t)
    if (m === null) throw err(`expected 'allow|deny <who> <action> <topic-filter>' or 'default allow|deny'`)
    const [, decision, whoText, action, filter] = m
    if (decision !== 'allow' && decision !== 'deny') throw err(`unknown decision '${decision}' (expected allow, deny or default)`)
    if (action !== 'publish' && action !== 'subscribe' && action !== 'all') throw err(`unknown action '${action}' (expected publish, subscribe or all)`)
    const who = parseWho(whoText)
    if (typeof who === 'string') throw err(who)
    const bad = filterError(filter)
    if (bad !== null) throw err(`topic filter '${filter}': ${bad}`)
    rules.push({
      decision,
      who,
      action,
      filter,
      levels: filter.split('/'),
      placeholders: /%[uc]/.test(filter),
      line: i + 1,
    })
  }
  return { path, rules, defaultDecision: defaultDecision ?? 'deny' }
}

/** Reads and parses a rules file; throws naming the file, the line and what is wrong. */
export function loadAcl(path: string): AclRules {
  return parseAcl(readText(path), path)
}

function filterError(filter: string): string | null {
  if (filter.startsWith('$share/')) return 'rules apply to the filter without $share/{group}/'
  return topicFilterError(filter, LIMITS)
}

function parseWho(text: string): AclWho[] | string {
  if (text === 'all') return []
  const out: AclWho[] = []
  for (const part of text.split(',')) {
    const colon = part.indexOf(':')
    const kind = colon < 0 ? part : part.slice(0, colon)
    const value = colon < 0 ? '' : part.slice(colon + 1)
    if (part === 'all') return `'all' cannot be combined with other conditions`
    if (kind === 'user' && value !== '') out.push({ kind: 'user', name: value })
    else if (kind === 'client' && value !== '') out.push({ kind: 'client', id: value })
    else if (kind === 'ip' && value !== '') {
      const list = parseIp(value)
      if (typeof list === 'string') return list
      out.push({ kind: 'ip', spec: value, list })
    } else return `unknown condition '${part}' (expected all, user:NAME, client:ID or ip:ADDRESS[/PREFIX])`
  }
  return out
}

function parseIp(spec: string): BlockList | string {
  const slash = spec.indexOf('/')
  const address = slash < 0 ? spec : spec.slice(0, slash)
  const family = isIP(address)
  if (family === 0) return `'${address}' is not an IPv4 or IPv6 address`
  const max = family === 4 ? 32 : 128
  const prefixText = slash < 0 ? String(max) : spec.slice(slash + 1)
  const prefix = Number(prefixText)
  if (!/^\d{1,3}$/.test(prefixText) || prefix > max) return `bad prefix length '/${prefixText}' for '${address}' (0 to ${max})`
  const list = new BlockList()
  list.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6')
  return list
}

function ipMatches(list: BlockList, address: string): boolean {
  const zone = address.indexOf('%')
  const a = zone < 0 ? address : address.slice(0, zone)
  const family = isIP(a)
  return family !== 0 && list.check(a, family === 4 ? 'ipv4' : 'ipv6')
}

/**
 * Whether every condition of a rule holds for the client. An unknown address (UNKNOWN_ADDRESS:
 * a session restored after a restart, before its client returns) is taken as the best case: it
 * matches every `ip:` condition of an allow rule and none of a deny rule, so what it could read
 * from some address is queued for it (an acknowledged message is never lost to a restart); its
 * real address decides when it returns (deliver.ts checks queued messages as they go out).
 * What is published for it with no later check (a pending will) uses UNKNOWN_ADDRESS_STRICT,
 * the worst case: an `ip:` condition holds for every deny rule and no allow rule.
 */
export function whoMatches(who: AclWho[], decision: 'allow' | 'deny', req: Pick<AclRequest, 'username' | 'clientId' | 'address'>): boolean {
  for (const w of who) {
    if (w.kind === 'user' ? req.username !== w.name
      : w.kind === 'client' ? req.clientId !== w.id
      : req.address === UNKNOWN_ADDRESS ? decision === 'deny'
      : req.address === UNKNOWN_ADDRESS_STRICT ? decision === 'allow'
      : !ipMatches(w.list, req.address)) return false
  }
  return true
}

/** The address of a client the broker has not seen since it started (see whoMatches); no
 * transport gives it to a real connection (an empty address matches no `ip:` rule). */
export const UNKNOWN_ADDRESS = '\u0000unknown'
/** The same unknown address, for decisions nothing checks again later (see whoMatches). */
export const UNKNOWN_ADDRESS_STRICT = '\u0000unknown-strict'

/** A placeholder value that cannot widen a rule, or null. */
function safeValue(v: string | undefined): string | null {
  return v === undefined || v.length === 0 || /[+#/]/.test(v) ? null : v
}

/**
 * The rule's filter levels for this client. Allow: null when a placeholder value is unusable
 * or turns the filter into a $-filter. Deny: an unusable value makes its level '+'.
 */
export function levelsFor(levels: string[], placeholders: boolean, decision: 'allow' | 'deny', req: Pick<AclRequest, 'username' | 'clientId'>): string[] | null {
  if (!placeholders) return levels
  const user = safeValue(req.username)
  const client = safeValue(req.clientId)
  const out: string[] = []
  for (const level of levels) {
    if (!level.includes('%')) { out.push(level); continue }
    let unusable = false
    const s = level.replace(/%[uc]/g, p => {
      const v = p === '%u' ? user : client
      if (v === null) unusable = true
      return v ?? ''
    })
    if (unusable && decision === 'allow') return null
    out.push(unusable ? '+' : s)
  }
  if (decision === 'allow' && out[0]!.startsWith('$') && !levels[0]!.startsWith('$')) return null
  return out
}

const isWild = (level: string) => level === '+' || level === '#'

/** Whether the filter (levels) matches the topic name (levels). */
export function levelsMatch(filter: string[], topic: string[]): boolean {
  // [MQTT-4.7.2-1] a filter starting with a wildcard does not match topics starting with '$'
  if (isWild(filter[0]!) && topic[0]!.startsWith('$')) return false
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i]!
    if (f === '#') return true
    if (i >= topic.length) return false
    if (f !== '+' && f !== topic[i]) return false
  }
  return filter.length === topic.length
}

/** Whether every topic `requested` can match is matched by `rule` (both as levels). */
export function filterCovers(rule: string[], requested: string[]): boolean {
  // [MQTT-4.7.2-1] a requested '$...' filter is not covered by a rule starting with a wildcard
  if (isWild(rule[0]!) && requested[0]!.startsWith('$')) return false
  for (let i = 0; ; i++) {
    const f = rule[i]
    const r = requested[i]
    if (f === '#') return true // also when r is undefined: 'a/#' matches 'a'
    if (f === undefined) return r === undefined
    if (r === undefined) return false // the rule needs more levels
    // requested '#' also matches the parent level; only '+/#' at the root matches all of it
    if (r === '#') return i === 0 && f === '+' && rule.length === 2 && rule[1] === '#'
    if (f !== '+' && f !== r) return false // r is '+' or another literal
  }
}

/** Whether some topic is matched by both filters (levels). */
export function filtersOverlap(a: string[], b: string[]): boolean {
  return filtersIntersect(a, b) !== null
}

/**
 * The filter matching exactly the topics both filters match (levels), or null when none does:
 * `a/+` and `+/b` give `a/b`; `a/#` and `+/b/#` give `a/b/#`; `a/#` and `a` give `a`.
 */
export function filtersIntersect(a: string[], b: string[]): string[] | null {
  // [MQTT-4.7.2-1] a leading wildcard never meets a '$' topic
  if ((isWild(a[0]!) && b[0]!.startsWith('$')) || (isWild(b[0]!) && a[0]!.startsWith('$'))) return null
  const out: string[] = []
  for (let i = 0; ; i++) {
    const x = a[i]
    const y = b[i]
    if (x === '#') { for (let j = i; j < b.length; j++) out.push(b[j]!); return out }
    if (y === '#') { for (let j = i; j < a.length; j++) out.push(a[j]!); return out }
    if (x === undefined || y === undefined) return x === y ? out : null
    if (x === '+') out.push(y)
    else if (y === '+' || x === y) out.push(x)
    else return null
  }
}

/** The request's topic as levels, or null when it is not a valid name (publish, read) or filter. */
function requestLevels(req: AclRequest): string[] | null {
  const t = req.topic
  if (req.action !== 'subscribe') {
    if (t.length === 0 || t.includes('+') || t.includes('#')) return null
  } else if (topicFilterError(t, LIMITS) !== null) return null
  return t.split('/')
}

/** The first matching rule's decision, else the file's default. Never 'defer'. */
export function authorize(rules: AclRules, req: AclRequest): Decision {
  const topic = requestLevels(req)
  if (topic === null) return 'deny'
  const action = req.action === 'read' ? 'subscribe' : req.action
  /** Subscribe: the (placeholder-filled) deny rules seen so far. */
  let denies: string[][] | null = null
  for (const rule of rules.rules) {
    if (rule.action !== 'all' && rule.action !== action) continue
    if (!whoMatches(rule.who, rule.decision, req)) continue
    const f = levelsFor(rule.levels, rule.placeholders, rule.decision, req)
    if (f === null) continue
    if (req.action !== 'subscribe') {
      if (levelsMatch(f, topic)) return rule.decision
    } else if (rule.decision === 'deny') {
      if (filterCovers(f, topic)) return 'deny'
      ;(denies ??= []).push(f)
    } else {
      const both = filtersIntersect(f, topic)
      if (both !== null && (denies === null || !denies.some((d) => filterCovers(d, both)))) return 'allow'
    }
  }
  return rules.defaultDecision
}

export interface CompiledFilter {
  levels: string[]
  placeholders: boolean
}

const compiled = new WeakMap<string[], CompiledFilter[]>()

export function compileList(list: string[]): CompiledFilter[] {
  let c = compiled.get(list)
  if (c === undefined) {
    // an invalid filter in a token grants nothing
    c = list.filter(f => filterError(f) === null).map(f => ({ levels: f.split('/'), placeholders: /%[uc]/.test(f) }))
    compiled.set(list, c)
  }
  return c
}

/**
 * A per-connection ACL (e.g. from JWT claims): publish and read are allowed when one of the
 * list's filters matches the topic; a subscription is granted when it overlaps one of the
 * subscribe filters (some topic it can match is readable). Placeholders as in the rules file;
 * everything else is denied.
 */
export function authorizeClientAcl(acl: ClientAcl, req: AclRequest): Decision {
  const topic = requestLevels(req)
  if (topic === null) return 'deny'
  for (const c of compileList(req.action === 'publish' ? acl.publish : acl.subscribe)) {
    const f = levelsFor(c.levels, c.placeholders, 'allow', req)
    if (f === null) continue
    if (req.action === 'subscribe' ? filtersIntersect(f, topic) !== null : levelsMatch(f, topic)) return 'allow'
  }
  return 'deny'
}

export interface AclFileOptions extends WatchedFileOptions {
  /** Called after a re-read (change or reload()) replaced the rules. */
  onReload?: (rules: AclRules) => void
}

/** A rules file kept current: re-read on change and on reload(); a bad version is not applied. */
export class AclFile {
  readonly path: string
  #file: WatchedFile<AclRules>

  /** Loads the file (throws naming file and line when invalid) and starts watching. */
  constructor(path: string, options: AclFileOptions = {}) {
    this.path = path
    this.#file = new WatchedFile(path, 'rules', parseAcl, (rules) => options.onReload?.(rules), options)
  }

  get rules(): AclRules {
    return this.#file.value
  }

  authorize(req: AclRequest): Decision {
    return authorize(this.#file.value, req)
  }

  /** Re-reads the file now. Throws (naming file and line) when invalid; the old rules stay. */
  reload(): void {
    this.#file.reload()
  }

  close(): void {
    this.#file.close()
  }
}

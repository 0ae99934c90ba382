/**
 * Read decisions made cheap: every message a restricted client gets is checked, so the rules
 * that can apply to one client are picked out once (per ACL version): those whose `who` holds
 * for it, for reading (subscribe or all), placeholders filled in. A subscription then keeps
 * only the rules that overlap its filter, or none at all when every topic it can match is
 * readable (then its messages are not checked one by one). The decision for a topic is the
 * same as authorize()'s for a `read` request (the first matching rule, else the default).
 */
import type { ClientAcl } from './types.ts'
import { compileList, filterCovers, filtersOverlap, levelsFor, levelsMatch, whoMatches, type AclRules } from './acl.ts'

export interface ReadRule {
  allow: boolean
  /** The rule's filter for this client, as levels. */
  levels: string[]
  /**
   * How a topic name is matched, fastest first: EXACT (no wildcard: the topic is `text`), ALL
   * (`#`: any topic not starting with `$`), PREFIX (literal levels then `#`: the topic is `text`
   * without its trailing `/` or starts with `text`), LEVELS (`+` somewhere: level by level),
   * COVERED (scopeOf: every topic of the subscription matches it).
   */
  kind: number
  text: string
  /** The first character code of `text` (a quick mismatch). */
  first: number
  /** The answer for the message numbered `gen` (readAllowed's memo, see there). */
  gen: number
  memo: boolean
}

const EXACT = 0, ALL = 1, PREFIX = 2, LEVELS = 3, COVERED = 4

/** The rules that can decide what one client may read, in order, and what holds when none matches. */
export interface ReadRules {
  rules: ReadRule[]
  defaultAllow: boolean
  /** Some rule matches level by level: pass the topic's levels to readAllowed. */
  needsLevels: boolean
}

function rule(allow: boolean, levels: string[]): ReadRule {
  const last = levels.length - 1
  const plus = levels.includes('+')
  const kind = plus ? LEVELS : levels[last] !== '#' ? EXACT : last === 0 ? ALL : PREFIX
  const text = kind === EXACT ? levels.join('/') : kind === PREFIX ? `${levels.slice(0, last).join('/')}/` : ''
  return { allow, levels, kind, text, first: text.charCodeAt(0), gen: 0, memo: false }
}

const rulesOf = (rules: ReadRule[], defaultAllow: boolean): ReadRules => ({ rules, defaultAllow, needsLevels: rules.some((r) => r.kind === LEVELS) })

/** Who the rules are for (a connection or a restored session's stored identity). */
export interface ReadWho {
  clientId: string
  username: string | undefined
  address: string
}

/**
 * A client's read (or publish) rules: its token's subscribe (publish) list (allow, else deny),
 * else the rules file's subscribe (publish) and `all` rules.
 */
export function compileRead(file: AclRules | null, clientAcl: ClientAcl | null, who: ReadWho, action: 'read' | 'publish' = 'read'): ReadRules {
  const rules: ReadRule[] = []
  const skip = action === 'read' ? 'publish' : 'subscribe'
  if (clientAcl !== null) {
    for (const c of compileList(action === 'read' ? clientAcl.subscribe : clientAcl.publish)) {
      const levels = levelsFor(c.levels, c.placeholders, 'allow', who)
      if (levels !== null) rules.push(rule(true, levels))
    }
    return rulesOf(rules, false)
  }
  if (file === null) return rulesOf(rules, true)
  for (const r of file.rules) {
    if (r.action === skip || !whoMatches(r.who, r.decision, who)) continue
    // a rule without placeholders is the same for every client: one object, so readAllowed's
    // memo answers it once per message for all of them
    if (!r.placeholders) { rules.push((r.compiled ??= rule(r.decision === 'allow', r.levels)) as ReadRule); continue }
    const levels = levelsFor(r.levels, r.placeholders, r.decision, who)
    if (levels !== null) rules.push(rule(r.decision === 'allow', levels))
  }
  return rulesOf(rules, file.defaultDecision === 'allow')
}

/**
 * The rules that can decide for topics `filter` (levels) matches, or null when every such
 * topic is readable. Walked in order: an overlapping deny rule means topics must be checked;
 * an allow rule covering the filter before any such deny means all are readable.
 */
export function scopeOf(read: ReadRules, filter: string[]): ReadRules | null {
  const rules: ReadRule[] = []
  let denies = false
  for (const r of read.rules) {
    if (!filtersOverlap(r.levels, filter)) continue
    const covers = filterCovers(r.levels, filter)
    if (r.allow && covers && !denies) return null
    rules.push(covers ? { ...r, kind: COVERED, gen: 0 } : r)
    if (!r.allow) denies = true
    // no rule after one that covers the filter ever decides for its topics
    if (covers) return rulesOf(rules, read.defaultAllow)
  }
  return !denies && read.defaultAllow ? null : rulesOf(rules, read.defaultAllow)
}

/** Numbers for messages (readAllowed's `gen`): a rule's memo is valid for one message. */
let lastGen = 0
// never wraps in practice (2^53 messages): a memo can never be mistaken for a later message's
export const nextGen = (): number => (lastGen = lastGen === Number.MAX_SAFE_INTEGER ? 1 : lastGen + 1)

/**
 * The decision for a topic name: the first matching rule's, else the default. `levels` is the
 * topic split at `/`, needed only when read.needsLevels (split once per message by the caller).
 * `gen` (from nextGen(), one per message; 0: none) lets a rule shared by many clients match the
 * topic once for all of them.
 */
export function readAllowed(read: ReadRules, topic: string, levels: string[] | null, gen = 0): boolean {
  const rules = read.rules
  const c0 = topic.charCodeAt(0)
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!
    let m: boolean
    if (gen !== 0 && r.gen === gen) m = r.memo
    else {
      const k = r.kind
      const t = r.text
      m = k === EXACT ? topic === t
        : k === PREFIX ? c0 === r.first && (topic.startsWith(t) || (topic.length === t.length - 1 && t.startsWith(topic)))
        : k === ALL ? c0 !== 36 // '$' [MQTT-4.7.2-1]
        : k === COVERED || levelsMatch(r.levels, levels ?? topic.split('/'))
      if (gen !== 0) { r.gen = gen; r.memo = m }
    }
    if (m) return r.allow
  }
  return read.defaultAllow
}

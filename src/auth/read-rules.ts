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
  /** Every topic the subscription can match is matched by this rule (scopeOf's result only). */
  covers?: boolean
}

/** The rules that can decide what one client may read, in order, and what holds when none matches. */
export interface ReadRules {
  rules: ReadRule[]
  defaultAllow: boolean
}

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
      if (levels !== null) rules.push({ allow: true, levels })
    }
    return { rules, defaultAllow: false }
  }
  if (file === null) return { rules, defaultAllow: true }
  for (const r of file.rules) {
    if (r.action === skip || !whoMatches(r.who, r.decision, who)) continue
    const levels = levelsFor(r.levels, r.placeholders, r.decision, who)
    if (levels !== null) rules.push({ allow: r.decision === 'allow', levels })
  }
  return { rules, defaultAllow: file.defaultDecision === 'allow' }
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
    rules.push({ allow: r.allow, levels: r.levels, covers })
    if (!r.allow) denies = true
    // no rule after one that covers the filter ever decides for its topics
    if (covers) return { rules, defaultAllow: read.defaultAllow }
  }
  return !denies && read.defaultAllow ? null : { rules, defaultAllow: read.defaultAllow }
}

/** The decision for a topic name (as levels): the first matching rule's, else the default. */
export function readAllowed(read: ReadRules, topic: string[]): boolean {
  const rules = read.rules
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!
    if (r.covers === true || levelsMatch(r.levels, topic)) return r.allow
  }
  return read.defaultAllow
}

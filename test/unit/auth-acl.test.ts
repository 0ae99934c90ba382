import { afterAll, afterEach, describe, expect, test } from 'bun:test'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AclFile, authorize, authorizeClientAcl, filterCovers, filtersIntersect, filtersOverlap, levelsMatch, loadAcl, parseAcl } from '../../src/auth/acl.ts'
import type { AclRules } from '../../src/auth/acl.ts'
import type { AclAction, AclRequest } from '../../src/auth/types.ts'
import { filterMatches } from '../../src/topic/match.ts'
import { prng } from '../helpers/prng.ts'
import { errorOf } from '../helpers/mqtt-error.ts'

const dir = mkdtempSync(join(tmpdir(), 'vmqtt-acl-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const rules = (text: string): AclRules => parseAcl(text, 'acl.txt')

interface Who {
  username?: string
  clientId?: string
  address?: string
}

function request(action: AclAction, topic: string, who: Who = {}): AclRequest {
  return { clientId: who.clientId ?? 'c1', username: who.username, address: who.address ?? '192.0.2.1', action, topic }
}
const pub = (r: AclRules, topic: string, who?: Who) => authorize(r, request('publish', topic, who))
const sub = (r: AclRules, filter: string, who?: Who) => authorize(r, request('subscribe', filter, who))
const read = (r: AclRules, topic: string, who?: Who) => authorize(r, request('read', topic, who))

describe('rules file format', () => {
  test('the documented example parses', () => {
    const r = rules(`
default deny
deny  all                     all        secret/#
allow user:admin              all        #
allow all                     all        users/%u/#
allow user:sensor,ip:10.0.0.0/8  publish  sensors/%c/+
# comment
allow all                     subscribe  sensors/#
`)
    expect(r.defaultDecision).toBe('deny')
    expect(r.rules.map(x => [x.line, x.decision, x.action, x.filter])).toEqual([
      [3, 'deny', 'all', 'secret/#'],
      [4, 'allow', 'all', '#'],
      [5, 'allow', 'all', 'users/%u/#'],
      [6, 'allow', 'publish', 'sensors/%c/+'],
      [8, 'allow', 'subscribe', 'sensors/#'],
    ])
    expect(r.rules[3]!.who.map(w => w.kind)).toEqual(['user', 'ip'])
  })

  test('the topic filter is the rest of the line, inner spaces included', () => {
    const r = rules('allow all publish room 1/temp\n')
    expect(pub(r, 'room 1/temp')).toBe('allow')
  })

  test('bad lines name the file, the line and what is wrong', () => {
    const cases: [string, string][] = [
      ['alow all all a', `acl.txt:1: unknown decision 'alow' (expected allow, deny or default)`],
      ['allow all read a', `acl.txt:1: unknown action 'read' (expected publish, subscribe or all)`],
      ['allow bob all a', `acl.txt:1: unknown condition 'bob' (expected all, user:NAME, client:ID or ip:ADDRESS[/PREFIX])`],
      ['allow user: all a', `acl.txt:1: unknown condition 'user:'`],
      ['allow all,user:a all a', `acl.txt:1: 'all' cannot be combined with other conditions`],
      ['allow ip:10.0.0.300 all a', `acl.txt:1: '10.0.0.300' is not an IPv4 or IPv6 address`],
      ['allow ip:10.0.0.0/33 all a', `acl.txt:1: bad prefix length '/33' for '10.0.0.0' (0 to 32)`],
      ['allow ip:::1/129 all a', `acl.txt:1: bad prefix length '/129' for '::1' (0 to 128)`],
      ['allow ip:10.0.0.0/x all a', `acl.txt:1: bad prefix length '/x'`],
      ['allow all all a/#/b', `acl.txt:1: topic filter 'a/#/b': '#' must be alone in the last level`],
      ['allow all all a+', `acl.txt:1: topic filter 'a+': '+' must occupy a whole level`],
      ['allow all all $share/g/a', `acl.txt:1: topic filter '$share/g/a': rules apply to the filter without $share/{group}/`],
      ['allow all all', `acl.txt:1: expected 'allow|deny <who> <action> <topic-filter>' or 'default allow|deny'`],
      ['default maybe', `acl.txt:1: expected 'default allow' or 'default deny'`],
    ]
    for (const [line, message] of cases) expect(errorOf(() => rules(`# header\n\n${line}\n`))).toStartWith(message.replace(':1:', ':3:'))
    expect(errorOf(() => rules('default allow\nallow all all a\ndefault deny\n'))).toBe(`acl.txt:3: second 'default' line (first on line 1)`)
  })

  test('loadAcl names a missing file', () => {
    const p = join(dir, 'missing.acl')
    expect(errorOf(() => loadAcl(p))).toStartWith(`${p}: cannot read`)
  })
})

describe('decisions', () => {
  test('first match wins', () => {
    expect(pub(rules('allow all all a/#\ndeny all all a/b\n'), 'a/b')).toBe('allow')
    expect(pub(rules('deny all all a/b\nallow all all a/#\n'), 'a/b')).toBe('deny')
    expect(pub(rules('deny all all a/b\nallow all all a/#\n'), 'a/c')).toBe('allow')
  })

  test('the default applies when no rule matches: deny without a default line', () => {
    expect(pub(rules('allow all all a\n'), 'b')).toBe('deny')
    expect(pub(rules('allow all all a\ndefault allow\n'), 'b')).toBe('allow')
    expect(pub(rules('deny all all a\ndefault allow\n'), 'a')).toBe('deny')
    expect(pub(rules('default deny\n'), 'a')).toBe('deny')
    expect(sub(rules('default allow\n'), '#')).toBe('allow')
  })

  test('the action limits a rule to publish or subscribe', () => {
    const r = rules('allow all publish p/#\nallow all subscribe s/#\nallow all all b/#\n')
    expect(pub(r, 'p/1')).toBe('allow')
    expect(sub(r, 'p/1')).toBe('deny')
    expect(sub(r, 's/1')).toBe('allow')
    expect(pub(r, 's/1')).toBe('deny')
    expect(pub(r, 'b/1')).toBe('allow')
    expect(sub(r, 'b/1')).toBe('allow')
  })

  test('invalid topics and filters are denied whatever the rules', () => {
    const r = rules('default allow\n')
    expect(pub(r, 'a/+')).toBe('deny')
    expect(pub(r, '')).toBe('deny')
    expect(sub(r, 'a/#/b')).toBe('deny')
    expect(sub(r, 'a+')).toBe('deny')
  })
})

describe('who', () => {
  test('user: and client: match exactly; no username never matches user:', () => {
    const r = rules('allow user:alice all u\nallow client:dev-1 all c\n')
    expect(pub(r, 'u', { username: 'alice' })).toBe('allow')
    expect(pub(r, 'u', { username: 'Alice' })).toBe('deny')
    expect(pub(r, 'u')).toBe('deny')
    expect(pub(r, 'c', { clientId: 'dev-1' })).toBe('allow')
    expect(pub(r, 'c', { clientId: 'dev-10' })).toBe('deny')
  })

  test('ip: IPv4 and IPv6 addresses and CIDR ranges, IPv4-mapped IPv6 clients', () => {
    const r = rules('allow ip:10.0.0.0/8 all v4\nallow ip:2001:db8::/32 all v6\nallow ip:127.0.0.1 all lo\nallow ip:::1 all lo6\n')
    expect(pub(r, 'v4', { address: '10.200.3.4' })).toBe('allow')
    expect(pub(r, 'v4', { address: '11.0.0.1' })).toBe('deny')
    expect(pub(r, 'v4', { address: '::ffff:10.0.0.7' })).toBe('allow')
    expect(pub(r, 'v6', { address: '2001:db8:1::5' })).toBe('allow')
    expect(pub(r, 'v6', { address: '2001:db9::5' })).toBe('deny')
    expect(pub(r, 'v6', { address: '10.0.0.1' })).toBe('deny')
    expect(pub(r, 'lo', { address: '127.0.0.1' })).toBe('allow')
    expect(pub(r, 'lo', { address: '::ffff:127.0.0.1' })).toBe('allow')
    expect(pub(r, 'lo', { address: '127.0.0.2' })).toBe('deny')
    expect(pub(r, 'lo6', { address: '0:0:0:0:0:0:0:1' })).toBe('allow')
    expect(pub(r, 'lo6', { address: 'fe80::1%eth0' })).toBe('deny')
    expect(pub(r, 'v4', { address: '' })).toBe('deny')
    expect(pub(r, 'v4', { address: 'not-an-ip' })).toBe('deny')
  })

  test('several conditions must all match', () => {
    const r = rules('allow user:alice,ip:10.0.0.0/8,client:c1 all t\n')
    expect(pub(r, 't', { username: 'alice', address: '10.1.1.1' })).toBe('allow')
    expect(pub(r, 't', { username: 'alice', address: '192.168.1.1' })).toBe('deny')
    expect(pub(r, 't', { username: 'bob', address: '10.1.1.1' })).toBe('deny')
    expect(pub(r, 't', { username: 'alice', address: '10.1.1.1', clientId: 'c2' })).toBe('deny')
  })
})

describe('placeholders', () => {
  const r = rules('allow all all users/%u/#\nallow all all clients/%c/#\nallow all publish dev-%c/%u\n')

  test('%u and %c are replaced, also inside a level', () => {
    expect(pub(r, 'users/alice/x', { username: 'alice' })).toBe('allow')
    expect(pub(r, 'users/bob/x', { username: 'alice' })).toBe('deny')
    expect(sub(r, 'users/alice/#', { username: 'alice' })).toBe('allow')
    // granted (users/alice/... is readable through it), and only alice's topics are delivered
    expect(sub(r, 'users/+/#', { username: 'alice' })).toBe('allow')
    expect(read(r, 'users/alice/x', { username: 'alice' })).toBe('allow')
    expect(read(r, 'users/bob/x', { username: 'alice' })).toBe('deny')
    expect(sub(r, 'users/bob/#', { username: 'alice' })).toBe('deny')
    expect(pub(r, 'clients/c1/x')).toBe('allow')
    expect(pub(r, 'clients/c2/x')).toBe('deny')
    expect(pub(r, 'dev-c1/alice', { username: 'alice' })).toBe('allow')
    expect(pub(r, 'dev-c2/alice', { username: 'alice' })).toBe('deny')
  })

  test('a missing or empty username never matches', () => {
    expect(pub(r, 'users//x')).toBe('deny')
    expect(pub(r, 'users//x', { username: '' })).toBe('deny')
    expect(pub(r, 'users/undefined/x')).toBe('deny')
  })

  test('hostile usernames and client ids with + # / cannot widen a rule', () => {
    for (const username of ['+', '#', 'a/#', 'bob/x', 'a+', 'b#']) {
      expect(pub(r, 'users/bob/x', { username })).toBe('deny')
      expect(pub(r, 'users/bob/x/y', { username })).toBe('deny')
      expect(sub(r, 'users/+/#', { username })).toBe('deny')
      expect(sub(r, 'users/#', { username })).toBe('deny')
      expect(sub(r, `users/${username}`, { username })).toBe('deny')
    }
    for (const clientId of ['+', '#', 'a/#']) {
      expect(pub(r, 'clients/other/x', { clientId })).toBe('deny')
      expect(sub(r, 'clients/#', { clientId })).toBe('deny')
    }
  })

  test('a value cannot turn an allow rule into a $ rule', () => {
    const r2 = rules('allow all all %u/#\n')
    expect(pub(r2, 'alice/x', { username: 'alice' })).toBe('allow')
    expect(pub(r2, '$SYS/broker/x', { username: '$SYS' })).toBe('deny')
    expect(sub(r2, '$SYS/#', { username: '$SYS' })).toBe('deny')
  })

  test('an unusable value makes a deny rule deny for any value', () => {
    const r2 = rules('deny all all users/%u/private\nallow all all users/#\n')
    expect(pub(r2, 'users/alice/private', { username: 'alice' })).toBe('deny')
    expect(pub(r2, 'users/bob/private', { username: 'alice' })).toBe('allow')
    for (const username of [undefined, '', '+', '#', 'a/b']) {
      expect(pub(r2, 'users/bob/private', { username })).toBe('deny')
      expect(sub(r2, 'users/+/private', { username })).toBe('deny')
      expect(pub(r2, 'users/bob/public', { username })).toBe('allow')
    }
  })

  test('per-connection lists (JWT) use the same placeholders', () => {
    const acl = { publish: ['users/%u/#'], subscribe: ['users/%u/#', 'clients/%c'] }
    const req = (action: AclAction, topic: string, who: Who) => authorizeClientAcl(acl, request(action, topic, who))
    expect(req('publish', 'users/alice/x', { username: 'alice' })).toBe('allow')
    expect(req('publish', 'users/bob/x', { username: '+' })).toBe('deny')
    expect(req('subscribe', 'users/+/x', { username: '+' })).toBe('deny')
    expect(req('subscribe', 'clients/c1', {})).toBe('allow')
    expect(req('subscribe', 'clients/+', { clientId: '+' })).toBe('deny')
  })
})

describe('subscribe: granted when some topic it can match is readable; read: per topic', () => {
  test('an allow rule grants every filter that overlaps it; reads are limited to its topics', () => {
    const r = rules('allow all subscribe a/#\nallow all subscribe b/+\n')
    for (const f of ['a/+/b', 'a/#', 'a', 'a/b', 'a/+', 'a/b/c/d', '#', '+', '+/b', 'b/#', 'b', 'b/x', 'b/+/+']) expect(sub(r, f)).toBe(f === 'b' || f === 'b/+/+' ? 'deny' : 'allow')
    for (const f of ['c/#', 'c', '+/+/+/+']) expect(sub(r, f)).toBe(f === '+/+/+/+' ? 'allow' : 'deny')
    for (const t of ['a', 'a/x', 'a/x/y', 'b/x']) expect(read(r, t)).toBe('allow')
    for (const t of ['b', 'b/x/y', 'c', 'c/a']) expect(read(r, t)).toBe('deny')
  })

  test('one deny rule and default allow (the interoperability suite\'s setting): # granted, the denied topic refused and not delivered', () => {
    const r = rules('deny all subscribe test/nosubscribe\ndefault allow\n')
    for (const f of ['#', '+/+', 'test/#', 'test/+', 'test/nosubscribe/#']) expect(sub(r, f)).toBe('allow')
    expect(sub(r, 'test/nosubscribe')).toBe('deny')
    expect(read(r, 'test/nosubscribe')).toBe('deny')
    expect(read(r, 'test/nosubscribe/x')).toBe('allow')
    expect(read(r, 'test/other')).toBe('allow')
    expect(pub(r, 'test/nosubscribe')).toBe('allow')
  })

  test('a deny rule covering the filter refuses it; a later allow only grants topics it does not hide', () => {
    const r = rules('deny all all secret/#\nallow all all #\n')
    for (const f of ['#', '+', '+/x', '+/#', 'public/#', 'a/+', 'x']) expect(sub(r, f)).toBe('allow')
    for (const f of ['secret', 'secret/#', 'secret/+/y', 'secret/x']) expect(sub(r, f)).toBe('deny')
    expect(read(r, 'secret')).toBe('deny')
    expect(read(r, 'secret/x/y')).toBe('deny')
    expect(read(r, 'public')).toBe('allow')
    expect(pub(r, 'secret')).toBe('deny')
  })

  test('an earlier allow wins over a later deny, topic by topic', () => {
    const r = rules('allow all subscribe a/b\ndeny all subscribe a/+\nallow all subscribe #\n')
    expect(sub(r, 'a/b')).toBe('allow')
    expect(sub(r, 'a/+')).toBe('allow')
    expect(sub(r, 'a/c')).toBe('deny')
    expect(read(r, 'a/b')).toBe('allow')
    expect(read(r, 'a/c')).toBe('deny')
    expect(read(r, 'a/c/d')).toBe('allow')
    // the allow rule's topics inside the filter are hidden by an earlier deny: refused
    expect(sub(rules('deny all subscribe a/#\nallow all subscribe +/b\n'), 'a/+')).toBe('deny')
    expect(sub(rules('deny all subscribe a/#\nallow all subscribe +/b\n'), '+/+')).toBe('allow')
  })

  test('per-connection lists: a subscription overlapping a subscribe filter is granted; reads match the filters', () => {
    const acl = { publish: ['a/#'], subscribe: ['a/+', 'b/#', 'bad/#/x'] }
    const s = (f: string) => authorizeClientAcl(acl, request('subscribe', f))
    const rd = (t: string) => authorizeClientAcl(acl, request('read', t))
    for (const f of ['a/x', 'a/#', 'b/+/c', '#', '+/+']) expect(s(f)).toBe('allow')
    for (const f of ['bad/#', 'c/#', 'a/x/y', 'a']) expect(s(f)).toBe('deny')
    expect([rd('a/x'), rd('b/x/y'), rd('a/x/y'), rd('bad/q/x'), rd('c')]).toEqual(['allow', 'allow', 'deny', 'deny', 'deny'])
    expect(authorizeClientAcl(acl, request('publish', 'a/x/y'))).toBe('allow')
    expect(authorizeClientAcl(acl, request('publish', 'b/x'))).toBe('deny')
    expect(authorizeClientAcl({ publish: [], subscribe: [] }, request('publish', 'a'))).toBe('deny')
  })
})

describe('$ topics [MQTT-4.7.2-1]', () => {
  test('a leading wildcard in a rule does not match $ topics', () => {
    const r = rules('allow all all #\nallow all all +/broker/#\n')
    expect(pub(r, '$SYS/broker/x')).toBe('deny')
    expect(sub(r, '$SYS/#')).toBe('deny')
    expect(sub(r, '$SYS/broker/+')).toBe('deny')
    expect(pub(r, 'x/broker/y')).toBe('allow')
  })

  test('explicit $ rules work, and # does not overlap a $ deny', () => {
    const r = rules('deny all all $SYS/private/#\nallow all subscribe $SYS/#\nallow all all #\n')
    expect(sub(r, '$SYS/broker/+')).toBe('allow')
    expect(sub(r, '$SYS/#')).toBe('allow')
    expect(sub(r, '$SYS/private/#')).toBe('deny')
    expect(read(r, '$SYS/private/x')).toBe('deny')
    expect(read(r, '$SYS/broker/x')).toBe('allow')
    expect(sub(r, '#')).toBe('allow')
    expect(sub(r, '+/private/#')).toBe('allow')
    expect(pub(r, '$SYS/private/x')).toBe('deny')
  })
})

describe('filter algebra against brute force', () => {
  // every filter of up to 3 levels over a, b, $s, +, #; every topic of up to 4 levels over
  // a, b, $s and z (z stands for every other value; 4 levels for "deeper than any filter")
  const filters: string[][] = []
  const grow = (prefix: string[]) => {
    for (const l of ['a', 'b', '$s', '+', '#']) {
      if (l === '$s' && prefix.length > 0) continue
      const f = [...prefix, l]
      filters.push(f)
      if (l !== '#' && f.length < 3) grow(f)
    }
  }
  grow([])
  const topics: string[][] = []
  const growTopics = (prefix: string[]) => {
    for (const l of ['a', 'b', '$s', 'z']) {
      const t = [...prefix, l]
      topics.push(t)
      if (t.length < 4) growTopics(t)
    }
  }
  growTopics([])
  const matches = filters.map(f => topics.map(t => levelsMatch(f, t)))

  test('levelsMatch agrees with the topic module', () => {
    filters.forEach((f, i) => topics.forEach((t, j) => expect(matches[i]![j]).toBe(filterMatches(f.join('/'), t.join('/')))))
  })

  test('filterCovers(F, R) iff every topic R matches, F matches', () => {
    let wrong: string[] = []
    filters.forEach((f, i) => filters.forEach((r, k) => {
      const expected = topics.every((_, j) => !matches[k]![j] || matches[i]![j])
      if (filterCovers(f, r) !== expected) wrong.push(`${f.join('/')} covers ${r.join('/')}: expected ${expected}`)
    }))
    expect(wrong).toEqual([])
    wrong = []
  })

  test('filtersOverlap(F, R) iff some topic matches both', () => {
    const wrong: string[] = []
    filters.forEach((f, i) => filters.forEach((r, k) => {
      const expected = topics.some((_, j) => matches[k]![j] && matches[i]![j])
      if (filtersOverlap(f, r) !== expected) wrong.push(`${f.join('/')} overlaps ${r.join('/')}: expected ${expected}`)
    }))
    expect(wrong).toEqual([])
  })

  test('filtersIntersect(F, R) matches exactly the topics both match', () => {
    const wrong: string[] = []
    filters.forEach((f, i) => filters.forEach((r, k) => {
      const both = filtersIntersect(f, r)
      const got = topics.map((t) => both !== null && levelsMatch(both, t))
      const expected = topics.map((_, j) => matches[k]![j]! && matches[i]![j]!)
      if (got.some((g, j) => g !== expected[j])) wrong.push(`${f.join('/')} ∩ ${r.join('/')} = ${both?.join('/') ?? 'none'}`)
    }))
    expect(wrong).toEqual([])
  })

  test('random rule lists: read is the first matching rule; a refused subscription could read nothing; one rule decides exactly', () => {
    const rand = prng(20240611)
    const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!
    const wrong: string[] = []
    let granted = 0, exact = 0
    for (let n = 0; n < 300; n++) {
      const lines = Array.from({ length: 1 + Math.floor(rand() * 4) }, () => `${pick(['allow', 'deny'])} all all ${pick(filters).join('/')}`)
      lines.push(`default ${pick(['allow', 'deny'])}`)
      const r = rules(lines.join('\n'))
      // the decision for one topic: first rule whose filter matches it
      const perTopic = (t: string[]) => r.rules.find(x => levelsMatch(x.levels, t))?.decision ?? r.defaultDecision
      for (const t of topics) if (read(r, t.join('/')) !== perTopic(t)) wrong.push(`${lines.join(' | ')}: read ${t.join('/')}`)
      for (const f of filters) {
        const readable = topics.some(t => levelsMatch(f, t) && perTopic(t) === 'allow')
        const d = sub(r, f.join('/'))
        if (d === 'deny' && readable) wrong.push(`${lines.join(' | ')}: ${f.join('/')} refused, yet it could read a topic`)
        if (d === 'allow') granted++
        if ((d === 'allow') === readable) exact++
        // with one rule the answer is exact
        if (r.rules.length === 1 && (d === 'allow') !== readable) wrong.push(`${lines.join(' | ')}: ${f.join('/')} ${d}`)
      }
    }
    expect(wrong).toEqual([])
    // over-grants (harmless: every message is checked) stay rare
    expect(exact / (300 * filters.length)).toBeGreaterThan(0.97)
    expect(granted).toBeGreaterThan(0)
  })
})

describe('AclFile', () => {
  const files: AclFile[] = []
  afterEach(() => {
    for (const f of files.splice(0)) f.close()
  })
  let n = 0
  const write = (text: string) => {
    const path = join(dir, `acl-${++n}.txt`)
    writeFileSync(path, text)
    return path
  }

  test('the constructor throws naming file and line', () => {
    const path = write('allow all all a\nallow all all a/#/b\n')
    expect(errorOf(() => new AclFile(path, { watch: false }))).toStartWith(`${path}:2: topic filter 'a/#/b'`)
  })

  test('reload() applies a good file and keeps the old rules on a bad one', () => {
    const path = write('allow all all a\n')
    const f = new AclFile(path, { watch: false })
    files.push(f)
    expect(f.authorize(request('publish', 'a'))).toBe('allow')
    writeFileSync(path, 'allow all all b\n')
    f.reload()
    expect(f.authorize(request('publish', 'a'))).toBe('deny')
    writeFileSync(path, 'allow all all a\nallow all sometimes b\n')
    expect(errorOf(() => f.reload())).toStartWith(`${path}:2: unknown action 'sometimes'`)
    expect(f.authorize(request('publish', 'b'))).toBe('allow')
  })

  test('a changed file is re-read; a bad one is reported and ignored', async () => {
    const path = write('allow all all a\n')
    let onReload: (r: AclRules) => void = () => {}
    let onError: (m: string) => void = () => {}
    const f = new AclFile(path, { onReload: r => onReload(r), onError: m => onError(m) })
    files.push(f)
    const next = <T>(set: (fn: (v: T) => void) => void) => new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no event within 5 s')), 5000)
      set(v => { clearTimeout(t); resolve(v) })
    })
    let reloaded = next<AclRules>(fn => { onReload = fn })
    // replaced by rename, as editors do
    writeFileSync(`${path}.new`, 'allow all all b\ndefault allow\n')
    renameSync(`${path}.new`, path)
    expect((await reloaded).defaultDecision).toBe('allow')
    expect(f.authorize(request('publish', 'zzz'))).toBe('allow')
    const failed = next<string>(fn => { onError = fn })
    reloaded = next<AclRules>(fn => { onReload = fn })
    writeFileSync(path, 'allow all all b\nallow nobody all c\n')
    expect(await failed).toBe(`${path}:2: unknown condition 'nobody' (expected all, user:NAME, client:ID or ip:ADDRESS[/PREFIX]); keeping the previous rules`)
    expect(f.rules.defaultDecision).toBe('allow')
    writeFileSync(path, 'deny all all b\n')
    expect((await reloaded).rules[0]!.decision).toBe('deny')
  })
})

import { describe, expect, test } from 'bun:test'
import { authorize, authorizeClientAcl, parseAcl, UNKNOWN_ADDRESS } from '../../src/auth/acl.ts'
import { compileRead, nextGen, readAllowed, scopeOf, type ReadRules } from '../../src/auth/read-rules.ts'
import { filterMatches } from '../../src/topic/match.ts'
import { prng } from '../helpers/prng.ts'

const LEVELS = ['a', 'b', 'u1', 'c1', '$x']
const WHO = ['all', 'user:u1', 'client:c1', 'ip:10.0.0.0/8', 'user:u1,ip:127.0.0.1']

function randomFilter(r: () => number, rule: boolean): string {
  const n = 1 + Math.floor(r() * 3)
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    const x = r()
    if (i === n - 1 && x < 0.2) { out.push('#'); break }
    if (x < 0.4) out.push('+')
    else if (rule && x < 0.5) out.push(r() < 0.5 ? '%u' : '%c')
    else out.push(LEVELS[Math.floor(r() * (i === 0 ? LEVELS.length : LEVELS.length - 1))]!)
  }
  return out.join('/')
}

function randomTopic(r: () => number): string {
  const n = 1 + Math.floor(r() * 3)
  return Array.from({ length: n }, (_, i) => LEVELS[Math.floor(r() * (i === 0 ? LEVELS.length : LEVELS.length - 1))]!).join('/')
}

const ALL: ReadRules = { rules: [], defaultAllow: true, needsLevels: false }

describe('read and publish rules (compiled per client, scoped per subscription) decide as authorize() does', () => {
  test('random rules files, clients, subscriptions and topics (seeded)', () => {
    let compared = 0
    for (let seed = 1; seed <= 300; seed++) {
      const r = prng(seed)
      const lines = Array.from({ length: 1 + Math.floor(r() * 5) }, () =>
        `${r() < 0.5 ? 'allow' : 'deny'} ${WHO[Math.floor(r() * WHO.length)]} ${['all', 'subscribe', 'publish'][Math.floor(r() * 3)]} ${randomFilter(r, true)}`)
      if (r() < 0.5) lines.push('default allow')
      const file = parseAcl(lines.join('\n'), 'acl.txt')
      for (const address of ['127.0.0.1', '10.1.2.3', UNKNOWN_ADDRESS]) {
        const who = { clientId: 'c1', username: r() < 0.8 ? 'u1' : undefined, address }
        const read = compileRead(file, null, who)
        const publish = compileRead(file, null, who, 'publish')
        for (let k = 0; k < 10; k++) {
          const filter = randomFilter(r, false)
          const scope = scopeOf(read, filter.split('/')) ?? ALL
          for (let t = 0; t < 10; t++) {
            const topic = randomTopic(r)
            // one message number for all checks of this topic: rules shared by clients answer once
            const gen = nextGen()
            const expected = authorize(file, { ...who, action: 'read', topic }) === 'allow'
            expect([seed, topic, readAllowed(read, topic, read.needsLevels ? topic.split('/') : null, gen)]).toEqual([seed, topic, expected])
            const mayPublish = authorize(file, { ...who, action: 'publish', topic }) === 'allow'
            expect([seed, topic, readAllowed(publish, topic, publish.needsLevels ? topic.split('/') : null)]).toEqual([seed, topic, mayPublish])
            if (!filterMatches(filter, topic)) continue
            expect([seed, filter, topic, readAllowed(scope, topic, scope.needsLevels ? topic.split('/') : null, gen)]).toEqual([seed, filter, topic, expected])
            compared++
          }
        }
      }
    }
    expect(compared).toBeGreaterThan(1000)
  })

  test('an unknown address (a restored session): what some address may read, so nothing acknowledged is lost to a restart', () => {
    const file = parseAcl('allow ip:10.0.0.0/8 subscribe a/#\ndeny ip:127.0.0.1 subscribe b/#\nallow all subscribe #\n', 'acl.txt')
    const at = (address: string, topic: string) => readAllowed(compileRead(file, null, { clientId: 'c', username: 'u', address }), topic, null)
    expect([at('10.0.0.1', 'a/1'), at('10.0.0.1', 'b/1'), at('127.0.0.1', 'b/1'), at('127.0.0.1', 'c')]).toEqual([true, true, false, true])
    expect([at(UNKNOWN_ADDRESS, 'a/1'), at(UNKNOWN_ADDRESS, 'b/1'), at(UNKNOWN_ADDRESS, 'c')]).toEqual([true, true, true])
    // a real connection without an address is not the unknown one: ip: allow rules never match it
    const only = parseAcl('allow ip:10.0.0.0/8 subscribe a/#\n', 'acl.txt')
    const at2 = (address: string) => readAllowed(compileRead(only, null, { clientId: 'c', username: 'u', address }), 'a/1', null)
    expect([at2(UNKNOWN_ADDRESS), at2(''), at2('10.0.0.1'), at2('11.0.0.1')]).toEqual([true, false, true, false])
  })

  test('a token\'s subscribe list: the listed topics only', () => {
    const acl = { publish: [], subscribe: ['users/%u/#', 'open/+'] }
    const who = { clientId: 'c', username: 'u', address: '127.0.0.1' }
    const read = compileRead(null, acl, who)
    const publish = compileRead(null, { publish: ['open/%c'], subscribe: [] }, who, 'publish')
    for (const topic of ['users/u/x', 'users/v/x', 'open/1', 'open/1/2', 'open/c', 'other']) {
      expect([topic, readAllowed(read, topic, read.needsLevels ? topic.split('/') : null)]).toEqual([topic, authorizeClientAcl(acl, { ...who, action: 'read', topic }) === 'allow'])
      expect([topic, readAllowed(publish, topic, publish.needsLevels ? topic.split('/') : null)]).toEqual([topic, topic === 'open/c'])
    }
    expect(scopeOf(read, ['users', 'u', '#'])).toBeNull()
    expect(scopeOf(read, ['#'])).not.toBeNull()
  })
})

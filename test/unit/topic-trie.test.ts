import { describe, expect, test } from 'bun:test'
import { TopicTrie } from '../../src/topic/trie.ts'

/** A trie holding each filter under key 'k' with the filter itself as the value. */
function trieOf(filters: string[]): TopicTrie<string> {
  const t = new TopicTrie<string>()
  for (const f of filters) t.add(f, 'k', f)
  return t
}

function matching(t: TopicTrie<string>, topic: string): string[] {
  const out: string[] = []
  t.match(topic, (v) => out.push(v))
  return out.sort()
}

const matches = (filter: string, topic: string) => matching(trieOf([filter]), topic).length === 1

describe('spec 4.7.1.2 multi-level wildcard', () => {
  test('sport/tennis/player1/# matches the parent and every level below', () => {
    expect(matches('sport/tennis/player1/#', 'sport/tennis/player1')).toBe(true)
    expect(matches('sport/tennis/player1/#', 'sport/tennis/player1/ranking')).toBe(true)
    expect(matches('sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon')).toBe(true)
    expect(matches('sport/tennis/player1/#', 'sport/tennis/player2')).toBe(false)
    expect(matches('sport/tennis/player1/#', 'sport/tennis')).toBe(false)
  })

  test('[MQTT-4.7.1-2] sport/# also matches the singular sport', () => {
    expect(matches('sport/#', 'sport')).toBe(true)
    expect(matches('sport/#', 'sport/')).toBe(true)
    expect(matches('sport/#', 'sports')).toBe(false)
  })

  test('# matches every topic not starting with $', () => {
    for (const topic of ['a', 'a/b/c', '/', '/finance', 'sport/tennis/player1']) expect(matches('#', topic)).toBe(true)
  })
})

describe('spec 4.7.1.3 single-level wildcard', () => {
  test('sport/tennis/+ matches one level only', () => {
    expect(matches('sport/tennis/+', 'sport/tennis/player1')).toBe(true)
    expect(matches('sport/tennis/+', 'sport/tennis/player2')).toBe(true)
    expect(matches('sport/tennis/+', 'sport/tennis/player1/ranking')).toBe(false)
  })

  test('sport/+ does not match sport but matches sport/', () => {
    expect(matches('sport/+', 'sport')).toBe(false)
    expect(matches('sport/+', 'sport/')).toBe(true)
  })

  test('+ and +/tennis/# and sport/+/player1', () => {
    expect(matches('+', 'sport')).toBe(true)
    expect(matches('+', 'sport/tennis')).toBe(false)
    expect(matches('+/tennis/#', 'sport/tennis')).toBe(true)
    expect(matches('+/tennis/#', 'sport/tennis/player1/score')).toBe(true)
    expect(matches('sport/+/player1', 'sport/tennis/player1')).toBe(true)
    expect(matches('sport/+/player1', 'sport/tennis/player2')).toBe(false)
  })

  test('/finance matches +/+ and /+ but not +', () => {
    expect(matching(trieOf(['+/+', '/+', '+']), '/finance')).toEqual(['+/+', '/+'])
  })

  test('+ matches an empty level', () => {
    expect(matches('a/+/b', 'a//b')).toBe(true)
    expect(matches('+/+', '/')).toBe(true)
  })
})

describe('spec 4.7.2 topics beginning with $', () => {
  test('[MQTT-4.7.2-1] # does not match $SYS topics', () => {
    expect(matches('#', '$SYS/monitor/Clients')).toBe(false)
    expect(matches('#', '$SYS')).toBe(false)
  })

  test('[MQTT-4.7.2-1] +/monitor/Clients does not match $SYS/monitor/Clients', () => {
    expect(matches('+/monitor/Clients', '$SYS/monitor/Clients')).toBe(false)
    expect(matches('+/#', '$SYS/monitor')).toBe(false)
    expect(matches('+', '$SYS')).toBe(false)
  })

  test('$SYS/# and $SYS/monitor/+ match $SYS/monitor/Clients', () => {
    expect(matches('$SYS/#', '$SYS/monitor/Clients')).toBe(true)
    expect(matches('$SYS/monitor/+', '$SYS/monitor/Clients')).toBe(true)
    expect(matches('$SYS/#', '$SYS')).toBe(true)
  })

  test('a $ inside a later level is an ordinary character', () => {
    expect(matches('#', 'a/$b')).toBe(true)
    expect(matches('a/+', 'a/$b')).toBe(true)
  })
})

describe('spec 4.7.3 no normalisation', () => {
  test('[MQTT-4.7.3-4] matching is case sensitive and leading / makes a distinct topic', () => {
    expect(matches('ACCOUNTS', 'Accounts')).toBe(false)
    expect(matches('finance', '/finance')).toBe(false)
    expect(matches('/finance', 'finance')).toBe(false)
    expect(matches('Accounts payable', 'Accounts payable')).toBe(true)
    expect(matches('a/b', 'a/b/')).toBe(false)
  })
})

describe('add / remove / get', () => {
  test('add reports new entries; replacing a value keeps the size', () => {
    const t = new TopicTrie<number>()
    expect(t.add('a/+', 'c1', 1)).toBe(true)
    expect(t.add('a/+', 'c2', 2)).toBe(true)
    expect(t.add('a/+', 'c1', 3)).toBe(false)
    expect(t.size).toBe(2)
    expect(t.get('a/+', 'c1')).toBe(3)
    expect(t.get('a/+', 'c3')).toBeUndefined()
    expect(t.get('a', 'c1')).toBeUndefined()
  })

  test('multiple keys per filter are all visited, each with its key', () => {
    const t = new TopicTrie<number>()
    t.add('a/+', 'c1', 1)
    t.add('a/+', 'c2', 2)
    t.add('a/#', 'c1', 3)
    const seen: string[] = []
    t.match('a/b', (v, k) => seen.push(`${k}=${v}`))
    expect(seen.sort()).toEqual(['c1=1', 'c1=3', 'c2=2'])
  })

  test('remove returns false for unknown filters and keys', () => {
    const t = trieOf(['a/b/c'])
    expect(t.remove('a/b', 'k')).toBe(false)
    expect(t.remove('a/b/c/d', 'k')).toBe(false)
    expect(t.remove('x', 'k')).toBe(false)
    expect(t.remove('a/b/c', 'other')).toBe(false)
    expect(t.size).toBe(1)
  })

  test('removing a deeper filter keeps the filter above it, and vice versa', () => {
    const t = trieOf(['a/b', 'a/b/c', 'a/b/#'])
    expect(t.remove('a/b/c', 'k')).toBe(true)
    expect(matching(t, 'a/b')).toEqual(['a/b', 'a/b/#'])
    expect(t.remove('a/b', 'k')).toBe(true)
    expect(matching(t, 'a/b/c')).toEqual(['a/b/#'])
    expect(t.size).toBe(1)
  })

  test('removing one key leaves the other keys of the same filter', () => {
    const t = new TopicTrie<string>()
    t.add('x/y', 'c1', 'one')
    t.add('x/y', 'c2', 'two')
    expect(t.remove('x/y', 'c1')).toBe(true)
    expect(matching(t as TopicTrie<string>, 'x/y')).toEqual(['two'])
    expect(t.get('x/y', 'c2')).toBe('two')
  })

  test('pruning: after removing everything the trie is empty and re-adding works', () => {
    const filters = ['a/b/c', 'a/b', 'a/+/c', '#', '/x', 'a//b']
    const t = trieOf(filters)
    for (const f of filters) expect(t.remove(f, 'k')).toBe(true)
    expect(t.size).toBe(0)
    expect([...t.entries()]).toEqual([])
    expect(matching(t, 'a/b/c')).toEqual([])
    for (const f of filters) expect(t.remove(f, 'k')).toBe(false)
    t.add('a/b/c', 'k', 'again')
    expect(matching(t, 'a/b/c')).toEqual(['again'])
  })

  test('entries rebuilds every filter, including empty levels', () => {
    const filters = ['a/b', '#', '/finance', '/', 'a//b', '+/+', '$SYS/#']
    const t = trieOf(filters)
    t.add('a/b', 'k2', 'a/b#2')
    const got = [...t.entries()].map(([f, k, v]) => `${f}|${k}|${v}`).sort()
    const want = [...filters.map((f) => `${f}|k|${f}`), 'a/b|k2|a/b#2'].sort()
    expect(got).toEqual(want)
  })
})

test('many keys on one filter: removing and re-adding keeps every value exactly once', () => {
  const t = new TopicTrie<string>()
  for (const k of ['a', 'b', 'c']) expect(t.add('x/y', k, `v${k}`)).toBe(true)
  expect(t.add('x/y', 'b', 'vb2')).toBe(false)
  expect(t.remove('x/y', 'a')).toBe(true)
  expect(t.add('x/y', 'd', 'vd')).toBe(true)
  expect(t.add('x/y', 'c', 'vc2')).toBe(false)
  const seen: string[] = []
  t.match('x/y', (v, k) => seen.push(`${k}=${v}`))
  expect(seen.sort()).toEqual(['b=vb2', 'c=vc2', 'd=vd'])
  expect(t.size).toBe(3)
  for (const k of ['b', 'c', 'd']) expect(t.remove('x/y', k)).toBe(true)
  expect(t.remove('x/y', 'd')).toBe(false)
  expect(t.size).toBe(0)
  expect([...t.entries()]).toEqual([])
})

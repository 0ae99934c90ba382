import { describe, expect, test } from 'bun:test'
import { TopicTree } from '../../src/topic/topic-tree.ts'

const TOPICS = ['sport/tennis/player1', 'sport/tennis/player1/ranking', 'sport/tennis/player1/score/wimbledon',
  'sport', 'sport/', '/finance', 'finance', '$SYS/broker/uptime', '$SYS', 'a/b/c']

function tree(): TopicTree<string> {
  const t = new TopicTree<string>()
  for (const topic of TOPICS) t.set(topic, topic)
  return t
}
const matched = (t: TopicTree<string>, filter: string) => { const out: string[] = []; t.match(filter, (v) => out.push(v)); return out.sort() }

describe('TopicTree.match (retained lookup by filter, spec 4.7)', () => {
  test('[MQTT-4.7.1-2] sport/tennis/player1/# matches the parent and every level below', () => {
    expect(matched(tree(), 'sport/tennis/player1/#')).toEqual(['sport/tennis/player1', 'sport/tennis/player1/ranking', 'sport/tennis/player1/score/wimbledon'])
  })
  test('[MQTT-4.7.1-2] sport/# matches sport itself', () => {
    expect(matched(tree(), 'sport/#')).toContain('sport')
    expect(matched(tree(), 'sport/#')).toContain('sport/')
  })
  test('+ matches exactly one level, including an empty one', () => {
    expect(matched(tree(), 'sport/+')).toEqual(['sport/'])
    expect(matched(tree(), '+')).toEqual(['finance', 'sport'])
    expect(matched(tree(), '+/+')).toEqual(['/finance', 'sport/'])
    expect(matched(tree(), '/+')).toEqual(['/finance'])
  })
  test('[MQTT-4.7.2-1] leading wildcards do not match $ topics; explicit $SYS filters do', () => {
    expect(matched(tree(), '#')).not.toContain('$SYS/broker/uptime')
    expect(matched(tree(), '#')).not.toContain('$SYS')
    expect(matched(tree(), '+/broker/uptime')).toEqual([])
    expect(matched(tree(), '$SYS/#')).toEqual(['$SYS', '$SYS/broker/uptime'])
    expect(matched(tree(), '#').length).toBe(TOPICS.length - 2)
  })
  test('exact filter, delete and pruning, size', () => {
    const t = tree()
    expect(matched(t, 'a/b/c')).toEqual(['a/b/c'])
    expect(t.delete('a/b/c')).toBe(true)
    expect(t.delete('a/b/c')).toBe(false)
    expect(t.delete('a/b')).toBe(false)
    expect(matched(t, 'a/#')).toEqual([])
    expect(t.size).toBe(TOPICS.length - 1)
    t.set('sport', 'replaced')
    expect(t.get('sport')).toBe('replaced')
    expect(t.size).toBe(TOPICS.length - 1)
    expect([...t.values()].length).toBe(TOPICS.length - 1)
  })
})

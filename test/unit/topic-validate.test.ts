import { describe, expect, test } from 'bun:test'
import { controlCharacterError, filterSyntaxError, parseShared, topicFilterError, topicNameError } from '../../src/topic/validate.ts'

const LIMITS = { maxLength: 65535, maxLevels: 128 }

describe('topicNameError', () => {
  test('valid topic names', () => {
    for (const t of ['a', 'sport/tennis/player1', '/', '/finance', 'a//b', '$SYS/broker/uptime', ' ', 'ü/€', 'a/$b']) {
      expect(topicNameError(t, LIMITS)).toBeNull()
    }
  })

  test('[MQTT-4.7.3-1] an empty topic name is invalid', () => {
    expect(topicNameError('', LIMITS)).toContain('empty')
  })

  test('[MQTT-3.3.2-2] wildcards are not allowed in a topic name', () => {
    for (const t of ['#', '+', 'a/+', 'a/#', 'sport+', 'a/b#', '+/x']) {
      expect(topicNameError(t, LIMITS)).toContain('wildcard')
    }
  })

  test('the length limit counts UTF-8 bytes', () => {
    expect(topicNameError('abc', { maxLength: 3, maxLevels: 10 })).toBeNull()
    expect(topicNameError('abcd', { maxLength: 3, maxLevels: 10 })).toContain('3 bytes')
    expect(topicNameError('ü', { maxLength: 2, maxLevels: 10 })).toBeNull()
    expect(topicNameError('üa', { maxLength: 2, maxLevels: 10 })).toContain('bytes')
  })

  test('the level limit counts levels, including empty ones', () => {
    expect(topicNameError('a/b/c', { maxLength: 100, maxLevels: 3 })).toBeNull()
    expect(topicNameError('a/b/c/d', { maxLength: 100, maxLevels: 3 })).toContain('3 levels')
    expect(topicNameError('//', { maxLength: 100, maxLevels: 2 })).toContain('levels')
  })
})

describe('topicFilterError', () => {
  test('valid filters from spec 4.7.1', () => {
    const ok = ['#', '+', 'sport/#', 'sport/tennis/player1/#', 'sport/tennis/+', '+/tennis/#', 'sport/+/player1',
      '+/+', '/+', '$SYS/#', '$SYS/monitor/+', 'a//b', '+/+/+', 'a/b/c']
    for (const f of ok) expect(topicFilterError(f, LIMITS)).toBeNull()
  })

  test('[MQTT-4.7.3-1] an empty filter is invalid', () => {
    expect(topicFilterError('', LIMITS)).toContain('empty')
  })

  test('[MQTT-4.7.1-2] # must be alone in the last level', () => {
    for (const f of ['sport/tennis#', 'sport/tennis/#/ranking', '#/a', 'a/#/', '##', 'a/b#']) {
      expect(topicFilterError(f, LIMITS)).toContain('#')
    }
  })

  test('[MQTT-4.7.1-3] + must occupy a whole level', () => {
    for (const f of ['sport+', 'a/b+', '+a/b', '++', 'a/+b/c']) {
      expect(topicFilterError(f, LIMITS)).toContain('+')
    }
  })

  test('limits apply to filters too', () => {
    expect(topicFilterError('a/+/#', { maxLength: 5, maxLevels: 3 })).toBeNull()
    expect(topicFilterError('a/+/#', { maxLength: 4, maxLevels: 3 })).toContain('bytes')
    expect(topicFilterError('a/+/#', { maxLength: 5, maxLevels: 2 })).toContain('levels')
  })
})

describe('parseShared', () => {
  test('an ordinary filter has no group', () => {
    expect(parseShared('a/b')).toEqual({ filter: 'a/b', group: null })
    expect(parseShared('$SYS/#')).toEqual({ filter: '$SYS/#', group: null })
    expect(parseShared('$shared/g/a')).toEqual({ filter: '$shared/g/a', group: null })
    expect(parseShared('$SHARE/g/a')).toEqual({ filter: '$SHARE/g/a', group: null })
  })

  test('$share/{ShareName}/{filter} splits into group and filter', () => {
    expect(parseShared('$share/g/a/b')).toEqual({ filter: 'a/b', group: 'g' })
    expect(parseShared('$share/consumers/sport/#')).toEqual({ filter: 'sport/#', group: 'consumers' })
    expect(parseShared('$share/g/+')).toEqual({ filter: '+', group: 'g' })
    expect(parseShared('$share/g//x')).toEqual({ filter: '/x', group: 'g' })
  })

  test('[MQTT-4.8.2-1] the ShareName is at least one character long', () => {
    expect(typeof parseShared('$share//a')).toBe('string')
  })

  test('[MQTT-4.8.2-2] the ShareName has no wildcard and is followed by / and a filter', () => {
    for (const raw of ['$share/g+/a', '$share/+/a', '$share/#/a', '$share/g#/a', '$share/g', '$share/g/', '$share/']) {
      expect(typeof parseShared(raw)).toBe('string')
    }
  })

  test('the filter part is returned as is, for topicFilterError to check', () => {
    const p = parseShared('$share/g/a#')
    expect(p).toEqual({ filter: 'a#', group: 'g' })
    expect(topicFilterError((p as { filter: string }).filter, LIMITS)).not.toBeNull()
  })
})

describe('control characters (U+0001-U+001F, U+007F-U+009F)', () => {
  const controls = ['\u0001', '\u0009', '\u001f', '\u007f', '\u0080', '\u0085', '\u009f']
  test('are refused in topic names and filters by default, naming the character', () => {
    for (const ch of controls) {
      expect(topicNameError(`a/b${ch}`, LIMITS)).toContain(`U+${ch.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`)
      expect(topicFilterError(`a/${ch}/#`, LIMITS)).toContain('control character')
      expect(filterSyntaxError(`+/${ch}`)).toContain('control character')
      expect(controlCharacterError(`id${ch}`)).toContain('control character')
    }
  })

  test('are accepted with allowControl; their neighbours always are', () => {
    for (const ch of controls) {
      expect(topicNameError(`a/b${ch}`, { ...LIMITS, allowControl: true })).toBeNull()
      expect(topicFilterError(`a/${ch}/#`, { ...LIMITS, allowControl: true })).toBeNull()
      expect(filterSyntaxError(`+/${ch}`, true)).toBeNull()
    }
    for (const ch of [' ', '~', '\u00a0', 'ÿ', '€']) {
      expect(topicNameError(`a/b${ch}`, LIMITS)).toBeNull()
      expect(topicFilterError(`a/${ch}/#`, LIMITS)).toBeNull()
      expect(controlCharacterError(`id${ch}`)).toBeNull()
    }
  })

  test('filterSyntaxError: the spec rules only, not the configured limits', () => {
    for (const f of ['ab/+e', '', 'a/#/b', 'a#', '+a', 'a+/b']) expect(filterSyntaxError(f)).not.toBeNull()
    for (const f of ['#', '+', 'a/+/b', '+/+/#', '/', 'x'.repeat(70000), 'a/'.repeat(500)]) expect(filterSyntaxError(f)).toBeNull()
  })
})

import { describe, expect, test } from 'bun:test'
import { Throttle } from '../../src/auth/audit.ts'

describe('Throttle (log and audit lines per key)', () => {
  test('at most perSecond lines per key a second; the next line says how many were left out', () => {
    const t = new Throttle(2)
    expect([t.take('a', 0), t.take('a', 10), t.take('a', 20), t.take('a', 30)]).toEqual([0, 0, -1, -1])
    expect(t.take('a', 1000)).toBe(2)
  })

  test('a flood of new keys does not reset the throttle of a key in use: new keys share one entry while it is full', () => {
    const t = new Throttle(2, 100)
    t.take('victim', 0)
    t.take('victim', 0)
    expect(t.take('victim', 0)).toBe(-1)
    // within the same second: 10,000 addresses, none of which may clear the victim's count
    for (let i = 0; i < 10_000; i++) t.take(`10.0.${i >> 8}.${i & 255}`, 500)
    expect(t.take('victim', 600)).toBe(-1)
    // the newcomers beyond the limit share one entry: 2 lines a second for all of them
    expect(t.take('new-1', 700)).toBe(-1)
    // a second later, idle keys are forgotten and new keys have their own entries again
    expect(t.take('new-2', 1600)).toBe(0)
    expect(t.take('victim', 1600)).toBe(2)
  })
})

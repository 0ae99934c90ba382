import { expect, test } from 'bun:test'
import { LoginGate } from '../../src/auth/login-gate.ts'
import { BUSY, START_MARGIN_MS, VerifyPool } from '../../src/auth/verify-pool.ts'

const gate = () => new LoginGate({ failDelay: 100, failDelayMax: 1600, failDelayAddressMax: 200 })

test('failure delays grow per address and username; the address part stays small for other usernames', () => {
  const g = gate()
  expect([1, 2, 3, 4, 5, 6].map(() => g.delay('10.0.0.1', 'alice', true))).toEqual([100, 200, 400, 800, 1600, 1600])
  // bob from the same address: his own first failure, and the address part (capped at 200)
  expect(g.delay('10.0.0.1', 'bob', true)).toBe(200)
  // another address knows nothing of these
  expect(g.delay('10.0.0.2', 'alice', true)).toBe(100)
})

test('a success waits as long as a failure of its key would, then clears that key only', () => {
  const g = gate()
  expect(g.delay('10.0.0.1', 'alice', false)).toBe(0)
  g.delay('10.0.0.1', 'alice', true)
  g.delay('10.0.0.1', 'alice', true)
  expect(g.delay('10.0.0.1', 'alice', false)).toBe(400)
  // cleared for alice; the address part (2 failures, next 200) remains
  expect(g.delay('10.0.0.1', 'alice', false)).toBe(200)
  expect(g.delay('10.0.0.1', undefined, false)).toBe(200)
})

test('an unknown user and a known one are delayed alike (the gate does not know which exists)', () => {
  const g = gate()
  const a = [g.delay('10.0.0.3', 'nobody', true), g.delay('10.0.0.3', 'nobody', true)]
  const b = [g.delay('10.0.0.4', 'alice', true), g.delay('10.0.0.4', 'alice', true)]
  expect(a).toEqual(b)
})

test('turns: two at a time per address, one once it has failures; a wait past the deadline is busy', async () => {
  const g = gate()
  const far = Date.now() + 60_000
  const t1 = (await g.turn('10.0.0.5', 'a', far))!
  const t2 = (await g.turn('10.0.0.5', 'b', far))!
  let third = false
  const p3 = g.turn('10.0.0.5', 'c', far).then((t) => { third = true; return t })
  await Bun.sleep(0)
  expect(third).toBe(false)
  g.delay('10.0.0.5', 'a', true)
  t1.done()
  // the address has a failure now: one at a time, so t2 still holds the only slot
  await Bun.sleep(0)
  expect(third).toBe(false)
  t2.done()
  const t3 = (await p3)!
  expect(t3.suspect).toBe(true)
  // it waited for the address's failure delay (100 ms); a turn that cannot wait long enough is busy
  t3.done()
  g.delay('10.0.0.5', 'a', true)
  expect(await g.turn('10.0.0.5', 'd', Date.now() + 10)).toBeNull()
})

test('the verification pool caps concurrency, serves suspect checks last and refuses beyond its queue', async () => {
  const pool = new VerifyPool(1, 3)
  const order: string[] = []
  let release!: () => void
  const first = pool.run(() => new Promise<string>((r) => { release = () => r('first') }))
  const later = pool.run(async () => { order.push('suspect'); return 'suspect' }, 'suspect')
  const normal = pool.run(async () => { order.push('normal'); return 'normal' })
  const normal2 = pool.run(async () => { order.push('normal2'); return 'normal2' })
  // full: a suspect check is refused; a clean one pushes out the oldest waiting suspect check
  expect(await pool.run(async () => 'x', 'suspect')).toBe(BUSY)
  const normal3 = pool.run(async () => { order.push('normal3'); return 'normal3' })
  expect(await later).toBe(BUSY)
  // full of clean checks: a clean one pushes out the oldest clean one
  const normal4 = pool.run(async () => { order.push('normal4'); return 'normal4' })
  expect(await normal).toBe(BUSY)
  release()
  expect(await Promise.all([first, normal2, normal3, normal4])).toEqual(['first', 'normal2', 'normal3', 'normal4'])
  // clean checks newest first (the oldest are the nearest to their connect timeout)
  expect(order).toEqual(['normal4', 'normal3', 'normal2'])
  // no queue at all: refused
  const none = new VerifyPool(1, 0)
  void none.run(() => new Promise<void>(() => {}))
  expect(await none.run(async () => 'y')).toBe(BUSY)
  expect(pool.running).toBe(0)
})

test('the verification pool serves suspect checks after clean ones and skips abandoned checks', async () => {
  const pool = new VerifyPool(1, 4)
  const order: string[] = []
  let release!: () => void
  let gone = false
  const first = pool.run(() => new Promise<string>((r) => { release = () => r('first') }))
  const later = pool.run(async () => { order.push('suspect'); return 'suspect' }, 'suspect')
  const dropped = pool.run(async () => { order.push('abandoned'); return 'abandoned' }, 'clean', () => gone)
  const normal = pool.run(async () => { order.push('normal'); return 'normal' })
  gone = true
  release()
  expect(await Promise.all([first, dropped, normal, later])).toEqual(['first', BUSY, 'normal', 'suspect'])
  expect(order).toEqual(['normal', 'suspect'])
  // an abandoned check that finds a free slot does not run either
  expect(await pool.run(async () => 'ran', 'clean', () => true)).toBe(BUSY)
  expect(pool.running).toBe(0)
})

test('an address refused as busy three times (or with other logins in flight) is a suspect, without any delay', async () => {
  const g = gate()
  // one busy refusal may be others' load only (a flood from fresh addresses): still clean
  g.busy('10.0.0.1')
  const t0 = await g.turn('10.0.0.1', 'alice', Date.now() + 5000)
  expect(t0!.suspect).toBe(false)
  t0!.done()
  g.busy('10.0.0.1')
  g.busy('10.0.0.1')
  const t1 = await g.turn('10.0.0.1', 'alice', Date.now() + 5000)
  const t2 = await g.turn('10.0.0.2', 'alice', Date.now() + 5000)
  expect([t1!.suspect, t2!.suspect]).toEqual([true, false])
  // refused busy while another login of the address is in flight: a suspect at once
  g.busy('10.0.0.2')
  t1!.done()
  t2!.done()
  const t3 = await g.turn('10.0.0.2', 'alice', Date.now() + 5000)
  expect(t3!.suspect).toBe(true)
  t3!.done()
  // no failure recorded: a success from there is not delayed
  expect(g.delay('10.0.0.1', 'alice', false)).toBe(0)
})

test('a user who logged in from an address is trusted there and in its /24 (/64), not elsewhere nor once suspect', async () => {
  const g = gate()
  const turn = async (address: string, user: string) => {
    const t = (await g.turn(address, user, Date.now() + 5000))!
    t.done()
    return t.trusted
  }
  expect(await turn('10.0.0.1', 'alice')).toBe(false)
  g.delay('10.0.0.1', 'alice', false)
  g.delay('2001:db8:1:2::5', 'alice', false)
  expect([await turn('10.0.0.1', 'alice'), await turn('10.0.0.77', 'alice'), await turn('2001:db8:1:2::9', 'alice')]).toEqual([true, true, true])
  expect([await turn('10.0.1.1', 'alice'), await turn('10.0.0.1', 'bob'), await turn('10.0.0.1', undefined as unknown as string)]).toEqual([false, false, false])
  // a failure from the address makes it a suspect: no trusted lane for its guesses
  g.delay('10.0.0.77', 'alice', true)
  expect(await turn('10.0.0.77', 'alice')).toBe(false)
  // and it ends alice's trust in that /24: a neighbour guessing her password gets no trusted
  // lane either (another user's trust, and hers in other networks, stay)
  g.delay('10.0.0.5', 'bob', false)
  expect([await turn('10.0.0.9', 'alice'), await turn('10.0.0.9', 'bob'), await turn('2001:db8:1:2::9', 'alice')]).toEqual([false, true, true])
  // a new success from there trusts it again
  g.delay('10.0.0.1', 'alice', false)
  expect(await turn('10.0.0.9', 'alice')).toBe(true)
})

test('the verification pool serves trusted checks first; only trusted checks push them out', async () => {
  const pool = new VerifyPool(1, 2)
  const order: string[] = []
  let release!: () => void
  const first = pool.run(() => new Promise<string>((r) => { release = () => r('first') }))
  const t1 = pool.run(async () => { order.push('t1'); return 't1' }, 'trusted')
  const c1 = pool.run(async () => { order.push('c1'); return 'c1' })
  // full: a trusted check pushes out the clean one; then clean and suspect checks are refused
  const t2 = pool.run(async () => { order.push('t2'); return 't2' }, 'trusted')
  expect(await c1).toBe(BUSY)
  expect(await pool.run(async () => 'c2')).toBe(BUSY)
  expect(await pool.run(async () => 's', 'suspect')).toBe(BUSY)
  // full of trusted checks: a trusted one pushes out the oldest trusted one
  const t3 = pool.run(async () => { order.push('t3'); return 't3' }, 'trusted')
  expect(await t1).toBe(BUSY)
  release()
  expect(await Promise.all([first, t2, t3])).toEqual(['first', 't2', 't3'])
  expect(order).toEqual(['t3', 't2'])
  expect(pool.running).toBe(0)
})

test('a check that has not started by its deadline minus the margin is answered busy, not left to time out', async () => {
  const pool = new VerifyPool(1, 4)
  let release!: () => void
  const first = pool.run(() => new Promise<string>((r) => { release = () => r('first') }))
  const t0 = Date.now()
  const late = await pool.run(async () => 'ran', 'trusted', undefined, Date.now() + START_MARGIN_MS + 150)
  const waited = Date.now() - t0
  expect(late).toBe(BUSY)
  expect(waited).toBeGreaterThanOrEqual(100)
  expect(waited).toBeLessThan(1000)
  expect(pool.queued).toBe(0)
  release()
  expect(await first).toBe('first')
  expect(pool.running).toBe(0)
})

test('one username has at most two trusted checks at once: a looping or stolen credential cannot hold the trusted lane', async () => {
  const g = gate()
  g.delay('10.0.0.1', 'alice', false)
  const deadline = Date.now() + 5000
  // two addresses of alice's trusted /24 (each address runs at most two checks at once)
  const turns = [await g.turn('10.0.0.1', 'alice', deadline), await g.turn('10.0.0.1', 'alice', deadline), await g.turn('10.0.0.2', 'alice', deadline)]
  expect(turns.map((t) => t!.trusted)).toEqual([true, true, false])
  turns[0]!.done()
  const next = (await g.turn('10.0.0.2', 'alice', deadline))!
  expect(next.trusted).toBe(true)
  for (const t of [...turns.slice(1), next]) t!.done()
})

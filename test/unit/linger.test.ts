import { expect, test } from 'bun:test'
import { Linger } from '../../src/transport/linger.ts'
import type { MqttSocket } from '../../src/transport/types.ts'
import { until } from '../helpers/until.ts'

/** A socket that records what was done to it. */
function fakeSocket(calls: string[], name: string, lingers = true): MqttSocket {
  const s: MqttSocket = { remoteAddress: '127.0.0.1', write: (d) => d.length, end: () => calls.push(`${name} end`) }
  if (lingers) {
    s.shutdown = () => calls.push(`${name} shutdown`)
    s.terminate = () => calls.push(`${name} terminate`)
  }
  return s
}

test('lingering sockets are bounded: beyond the cap a socket is closed at once', () => {
  const calls: string[] = []
  const linger = new Linger(2, 60_000)
  for (const n of ['a', 'b', 'c']) linger.close(fakeSocket(calls, n))
  expect(calls).toEqual(['a shutdown', 'b shutdown', 'c end'])
  expect(linger.size).toBe(2)
  linger.stop()
  expect(calls.slice(3)).toEqual(['a terminate', 'b terminate'])
  expect(linger.size).toBe(0)
})

test('a lingering socket is terminated after the linger time, and freed early when it closes', async () => {
  const calls: string[] = []
  const linger = new Linger(10, 50)
  const a = fakeSocket(calls, 'a')
  const b = fakeSocket(calls, 'b')
  linger.close(a)
  linger.close(b)
  linger.closed(b)
  expect(linger.size).toBe(1)
  await until('a to be terminated', () => calls.includes('a terminate'), 2000)
  expect(calls).toEqual(['a shutdown', 'b shutdown', 'a terminate'])
  expect(linger.size).toBe(0)
})

test('a transport without shutdown is ended at once', () => {
  const calls: string[] = []
  new Linger().close(fakeSocket(calls, 'q', false))
  expect(calls).toEqual(['q end'])
})

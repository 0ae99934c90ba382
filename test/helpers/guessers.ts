/**
 * Password guessing for tests and scripts/prelogin-probe.ts: timed logins, swarms of guessers
 * and a spy that counts password verifications (calls to Bun.password.verify).
 */
import type { IConnackPacket } from 'mqtt-packet'
import * as b from './packet-builder.ts'
import { RawClient } from './raw-client.ts'

let seq = 0

/** One login; the CONNACK code (-1: closed without one) and the time to the answer. */
export async function timedLogin(port: number, o: b.ConnectOpts, localAddress?: string): Promise<{ code: number; ms: number }> {
  const version = o.version ?? 4
  const c = await RawClient.connect(port, { version, ...(localAddress !== undefined ? { localAddress } : {}) })
  const t0 = performance.now()
  c.send(b.connect({ clientId: `login-${++seq}`, ...o }))
  try {
    const ack = (await c.nextOf('connack', 15_000)) as IConnackPacket
    return { code: (version === 5 ? ack.reasonCode : ack.returnCode) ?? -1, ms: performance.now() - t0 }
  } catch {
    return { code: -1, ms: performance.now() - t0 }
  } finally {
    c.destroy()
  }
}

/** `n` clients from `localAddress` guessing `username`'s password until `stopAt` (performance.now(),
 * or until the signal aborts); resolves with the answered guesses. */
export async function guessers(port: number, n: number, username: (i: number) => string, stopAt: number | AbortSignal, localAddress = '127.0.0.1'): Promise<number> {
  let answered = 0
  const going = typeof stopAt === 'number' ? () => performance.now() < stopAt : () => !stopAt.aborted
  await Promise.all(Array.from({ length: n }, async (_, i) => {
    while (going()) {
      const r = await timedLogin(port, { version: 5, username: username(i), password: `guess-${++seq}` }, localAddress)
      if (r.code > 0) answered++
    }
  }))
  return answered
}

/** Counts Bun.password.verify calls and how many ran at once, until restore(); `slowMs`: each
 * call takes at least that long (a loaded machine). */
export function spyVerify(slowMs = 0) {
  const password = Bun.password as { verify: typeof Bun.password.verify }
  const original = password.verify
  const stats = { calls: 0, running: 0, maxRunning: 0 }
  password.verify = async (...args: Parameters<typeof original>) => {
    stats.calls++
    stats.maxRunning = Math.max(stats.maxRunning, ++stats.running)
    try {
      const [r] = await Promise.all([original.apply(Bun.password, args), slowMs > 0 ? Bun.sleep(slowMs) : undefined])
      return r
    } finally {
      stats.running--
    }
  }
  return { stats, restore: () => { password.verify = original } }
}

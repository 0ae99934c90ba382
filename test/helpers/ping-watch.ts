import * as b from './packet-builder.ts'
import type { RawClient } from './raw-client.ts'

/**
 * Sends PINGREQ after PINGREQ on a connected client and keeps the longest round trip: how long
 * the broker's event loop was unavailable to that client while something else happened.
 */
export function pingWatch(client: RawClient) {
  let max = 0
  let count = 0
  let running = true
  const loop = (async () => {
    while (running) {
      const t = performance.now()
      client.send(b.pingreq())
      await client.nextOf('pingresp', 60_000)
      max = Math.max(max, performance.now() - t)
      count++
    }
  })()
  return {
    /** Stops after the ping in flight; resolves with the longest round trip (ms) and the number of pings. */
    async stop(): Promise<{ maxMs: number; pings: number }> {
      running = false
      await loop
      return { maxMs: max, pings: count }
    },
  }
}

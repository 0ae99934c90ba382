/**
 * How long a garbage collection stalls the event loop with a large heap (idle-gc.ts):
 * `bun scripts/gc-stall.ts true` (Bun.gc(true), blocking) or `false` (started, concurrent).
 * Builds ~600 MiB of heap (2 M live objects, 2 M garbage buffers), then prints the time the call
 * took, the longest gap between 1 ms timers in the next 2 s, and RSS before and after.
 */
const live: unknown[] = []
for (let i = 0; i < 2_000_000; i++) live.push({ id: i, topic: 't/' + i, payload: null as unknown })
let junk: unknown[] | null = []
for (let i = 0; i < 2_000_000; i++) junk.push({ i, b: Buffer.alloc(64) })
junk = null
const rssBefore = process.memoryUsage.rss()
const mode = process.argv[2] === 'false' ? false : true
// event loop lag: the longest gap between 1 ms timers during the next 2 s
let last = performance.now(), maxGap = 0
const iv = setInterval(() => { const t = performance.now(); maxGap = Math.max(maxGap, t - last); last = t }, 1)
await Bun.sleep(200)
maxGap = 0
const t = performance.now()
Bun.gc(mode)
const call = performance.now() - t
await Bun.sleep(2000)
clearInterval(iv)
console.log(JSON.stringify({ force: mode, callMs: +call.toFixed(1), maxLoopGapMs: +maxGap.toFixed(1), rssBeforeMiB: rssBefore >> 20, rssAfterMiB: process.memoryUsage.rss() >> 20, live: live.length }))
export {}

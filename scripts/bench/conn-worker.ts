#!/usr/bin/env bun
/**
 * Connection-scale client process: opens `count` MQTT connections from the given 127.0.0.x
 * source addresses (node:net, since Bun.connect cannot bind a local address), each sending
 * CONNECT (keepalive 0) and, after CONNACK, one SUBSCRIBE; then keeps them idle.
 *
 *   bun scripts/bench/conn-worker.ts '{"port":1883,"version":4,"count":5000,"addresses":["127.0.0.2"],"prefix":"w0","concurrency":25}'
 *
 * Protocol on stdio (JSON lines out, words in): prints {"ready":true}; on "go" connects and
 * prints {"done":true,"connected":n,"failed":n,"ms":t,"error":"first error"}; exits on "exit"
 * or when stdin closes (the kernel then closes every connection).
 *
 * With "warmupMs" in the spec, "go" runs the same connect + subscribe sequence for that long
 * instead, closing each connection after its SUBACK, and reports how many it completed.
 */
import net from 'node:net'
import { connectPacket, subscribePacket, type Version } from './packets.ts'

interface Spec { port: number; version: Version; count: number; addresses: string[]; prefix: string; concurrency: number; warmupMs?: number }

const spec = JSON.parse(process.argv[2]!) as Spec
const sockets: net.Socket[] = []
let connected = 0, failed = 0, firstError = ''

/** One connection: resolves true after SUBACK, false on any error or refusal. */
function open(i: number): Promise<boolean> {
  return new Promise((resolve) => {
    const localAddress = spec.addresses[i % spec.addresses.length]!
    const s = net.connect({ host: '127.0.0.1', port: spec.port, localAddress })
    s.setNoDelay(true)
    let buf: Buffer = Buffer.alloc(0)
    let settled = false
    const finish = (ok: boolean, err?: string) => {
      if (settled) return
      settled = true
      if (!ok) { if (!firstError && err) firstError = err; s.destroy() } else if (spec.warmupMs) s.end()
      else sockets.push(s)
      resolve(ok)
    }
    s.on('connect', () => s.write(connectPacket({ clientId: `conn-${spec.prefix}-${i}`, version: spec.version, keepalive: 0 })))
    s.on('data', (chunk: Buffer) => {
      if (settled) return
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      while (buf.length >= 2) {
        let len = 0, mult = 1, at = 1, b: number
        do { if (at >= buf.length) return; b = buf[at++]!; len += (b & 0x7f) * mult; mult *= 128 } while (b & 0x80)
        if (buf.length < at + len) return
        const type = buf[0]! >> 4
        if (type === 2) {
          if (buf[at + 1] !== 0) return finish(false, `CONNACK 0x${buf[at + 1]!.toString(16)}`)
          s.write(subscribePacket(`conn/${spec.prefix}/${i}`, 0, 1, spec.version))
        } else if (type === 9) {
          const granted = buf[at + len - 1]!
          return finish(granted < 0x80, granted < 0x80 ? undefined : `SUBACK 0x${granted.toString(16)}`)
        }
        buf = buf.subarray(at + len)
      }
    })
    s.on('error', (e) => finish(false, e.message))
    s.on('close', () => finish(false, 'closed by the broker'))
  })
}

async function run(): Promise<void> {
  const t0 = performance.now()
  let next = 0
  const more = spec.warmupMs ? () => performance.now() - t0 < spec.warmupMs! : () => next < spec.count
  await Promise.all(Array.from({ length: Math.min(spec.concurrency, spec.count) }, async () => {
    while (more()) {
      if (await open(next++)) connected++
      else failed++
    }
  }))
  console.log(JSON.stringify({ done: true, connected, failed, ms: performance.now() - t0, error: firstError }))
}

process.stdin.setEncoding('utf8')
process.stdin.on('data', (d: string) => {
  for (const word of d.split('\n')) {
    if (word === 'go') void run()
    else if (word === 'exit') process.exit(0)
  }
})
process.stdin.on('end', () => process.exit(0))
console.log(JSON.stringify({ ready: true }))

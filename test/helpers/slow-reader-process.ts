/**
 * A client in its own process (so that nothing reads its socket ahead of it): connects,
 * sends a v5 CONNECT and `n` QoS 2 PUBLISH in one write without reading, waits `pauseMs`,
 * then reads until EOF or an error. Prints one JSON line: { bytes (hex), eof, error }.
 * Usage: bun slow-reader-process.ts PORT N PAUSE_MS
 */
import { connect } from 'node:net'
import * as b from './packet-builder.ts'

const [port, n, pauseMs] = process.argv.slice(2).map(Number) as [number, number, number]
const socket = connect({ port, host: '127.0.0.1' })
socket.pause()
let error: string | null = null
socket.on('error', (e: NodeJS.ErrnoException) => { error ??= e.code ?? e.message })
await new Promise((r) => socket.once('connect', r))
const payload = Buffer.alloc(100, 0x61)
socket.write(Buffer.concat([b.connect({ version: 5, clientId: 'slow-reader' }),
  ...Array.from({ length: n }, (_, i) => b.publish({ topic: 'flood/q2', qos: 2, packetId: i + 1, payload, version: 5 }))]))
await new Promise((r) => setTimeout(r, pauseMs))
const chunks: Buffer[] = []
let eof = false
await new Promise<void>((resolve) => {
  const timer = setTimeout(resolve, 3000)
  socket.on('data', (c: Buffer) => chunks.push(c))
  socket.on('end', () => { eof = true; clearTimeout(timer); resolve() })
  socket.on('close', () => { clearTimeout(timer); resolve() })
  socket.resume()
})
console.log(JSON.stringify({ bytes: Buffer.concat(chunks).toString('hex'), eof, error }))
socket.destroy()
process.exit(0)

#!/usr/bin/env bun
/**
 * Issue 13 section 4, measured against the broker as a child process (`bun src/main.ts`,
 * memory store): memory of oversized CONNECTs before login, the event loop while hostile
 * packets are handled (the longest PINGREQ round trip of a connected client), and password
 * guessing (answered guesses/s, broker CPU, a real login's latency while being guessed at).
 *
 *   bun scripts/prelogin-probe.ts [--guessers 16] [--seconds 10] [--old]
 *
 * --old leaves out configuration keys added by issue 13 (to measure an older checkout).
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { connectWithProps, publishWithProps, subscribeMany, subscribeWithProps, userProps } from '../test/helpers/big-packets.ts'
import { BrokerProcess } from '../test/helpers/fuzz.ts'
import { guessers, timedLogin } from '../test/helpers/guessers.ts'
import * as b from '../test/helpers/packet-builder.ts'
import { passwdFile } from '../test/helpers/passwd-file.ts'
import { pingWatch } from '../test/helpers/ping-watch.ts'
import { RawClient } from '../test/helpers/raw-client.ts'

const { values: opt } = parseArgs({
  options: { guessers: { type: 'string', default: '16' }, seconds: { type: 'string', default: '10' }, old: { type: 'boolean', default: false } },
})
const newKeys = (env: Record<string, string>) => opt.old ? {} : env
const MiB = 1024 * 1024

/** CPU seconds (user + system) the process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

// 0. decode time of the worst packets of 16 MiB, in this process, with the default limits
if (!opt.old) {
  const { decodePacket } = await import('../src/codec/packets.ts')
  const { decodePublish } = await import('../src/codec/publish.ts')
  const { splitFrame } = b
  const lim = { maxUserProperties: 1024, maxTopicFiltersPerPacket: 1024 }
  const time = (what: string, frame: Buffer, decode: (header: number, body: Buffer) => unknown) => {
    const { header, body } = splitFrame(frame)
    const ms: number[] = []
    let outcome = 'decoded'
    for (let i = 0; i < 5; i++) {
      const t = performance.now()
      try { decode(header, body) } catch (e) { outcome = `refused: ${(e as Error).message}` }
      ms.push(performance.now() - t)
    }
    console.log(`decode ${what}: median ${ms.sort((x, y) => x - y)[2]!.toFixed(2)} ms (${outcome})`)
  }
  const n = Math.floor((16 * MiB - 64) / 5)
  time('PUBLISH 16 MiB, 3.3M user properties', publishWithProps('t', userProps(n)), (h, body) => decodePublish(h, body, true, true, 0, undefined, lim.maxUserProperties))
  time('PUBLISH 16 MiB, 254 user property strings of 64 KiB', publishWithProps('t', userProps(127, 65535)), (h, body) => decodePublish(h, body, true, true, 0, undefined, lim.maxUserProperties))
  time('SUBSCRIBE 16 MiB, 3.3M user properties', subscribeWithProps(1, userProps(n)), (h, body) => decodePacket(h, body, 5, lim))
  time('SUBSCRIBE 16 MiB, 4M filters', subscribeMany(1, 4_000_000, true), (h, body) => decodePacket(h, body, 5, lim))
  time('SUBSCRIBE 1 MiB (limits.maxControlPacketSize), 7 user property strings of 64 KiB', subscribeWithProps(1, userProps(7, 65535)), (h, body) => decodePacket(h, body, 5, lim))
  time('SUBSCRIBE 1,024 filters of 250 bytes', subscribeLong(1024, 250), (h, body) => decodePacket(h, body, 5, lim))
  time('CONNECT 64 KiB (limits.maxConnectPacketSize), 1,024 user properties of 28 bytes', connectWithProps(userProps(1024, 26), 'c'), (h, body) => decodePacket(h, body, 5, lim))
}

/** A v5 SUBSCRIBE with `n` filters of `len` bytes. */
function subscribeLong(n: number, len: number): Buffer {
  const one = Buffer.from([...b.str('f'.repeat(len)), 0])
  const body = Buffer.concat([Buffer.from([0, 1, 0]), ...Array.from({ length: n }, () => one)])
  return Buffer.concat([Buffer.from([0x82, ...b.varint(body.length)]), body])
}

await using passwd = await passwdFile({ alice: 'wonderland', pinger: 'secret' }, 'real')
const login = { username: 'pinger', password: 'secret' }

// 1. 30 connections claim a 16,000,000-byte CONNECT and send 15 MiB of zeros
{
  await using broker = await BrokerProcess.start({ VMQTT_LOG_LEVEL: 'error' }).then(({ broker, port }) => Object.assign(broker, { port }))
  const before = broker.rss()
  const zeros = Buffer.alloc(15 * MiB)
  const clients = await Promise.all(Array.from({ length: 30 }, () => RawClient.connect(broker.port, { version: 5 })))
  for (const c of clients) { c.send(Buffer.from([0x10, ...b.varint(16_000_000), ...b.str('MQTT'), 5, 2, 0, 60])); c.send(zeros) }
  await Bun.sleep(2000)
  const peak = broker.rss()
  for (const c of clients) c.destroy()
  console.log(`30 x CONNECT claiming 16,000,000 bytes + 15 MiB zeros: RSS ${(before / MiB).toFixed(0)} -> ${(peak / MiB).toFixed(0)} MiB after 2 s`)
}

// 2. the longest ping round trip of a connected client while a hostile packet is handled
async function pingDuring(what: string, env: Record<string, string>, bad: Buffer, loginFirst: boolean): Promise<void> {
  await using broker = await BrokerProcess.start({ VMQTT_LOG_LEVEL: 'error', VMQTT_AUTH_PASSWORD_FILE: passwd.path, ...env }).then(({ broker, port }) => Object.assign(broker, { port }))
  const { client: watcher } = await RawClient.open(broker.port, { version: 5, clientId: 'pinger', ...login })
  const c = loginFirst ? (await RawClient.open(broker.port, { version: 5, clientId: 'hostile', ...login })).client : await RawClient.connect(broker.port, { version: 5 })
  const watch = pingWatch(watcher)
  const t0 = performance.now()
  c.send(bad)
  // a packet that is accepted without an answer (QoS 0 PUBLISH) is followed by this one's
  c.send(b.pingreq())
  let answer = 'closed'
  try { const p = await c.next(30_000); answer = `${p.cmd} 0x${((p as { reasonCode?: number }).reasonCode ?? 0).toString(16)}` } catch { /* closed without an answer */ }
  const answerMs = performance.now() - t0
  const { maxMs, pings } = await watch.stop()
  console.log(`${what}: answer ${answer} after ${answerMs.toFixed(0)} ms; longest ping ${maxMs.toFixed(1)} ms (${pings} pings)`)
  c.destroy()
  await watcher.close()
}
const sixteen = 16 * MiB
{
  await using broker = await BrokerProcess.start({ VMQTT_LOG_LEVEL: 'error' }).then(({ broker, port }) => Object.assign(broker, { port }))
  const { client } = await RawClient.open(broker.port, { version: 5, clientId: 'pinger' })
  const watch = pingWatch(client)
  await Bun.sleep(1000)
  const { maxMs, pings } = await watch.stop()
  console.log(`baseline, nothing else happening: longest ping ${maxMs.toFixed(1)} ms (${pings} pings in 1 s)`)
  await client.close()
}
await pingDuring('PUBLISH 16 MiB, 3.3M user properties (logged in)', {}, publishWithProps('t', userProps(Math.floor((sixteen - 64) / 5))), true)
await pingDuring('PUBLISH 16 MiB, 254 user property strings of 64 KiB (logged in)', {}, publishWithProps('t', userProps(127, 65535)), true)
await pingDuring('CONNECT 11 MB, 2.2M user properties, wrong password (CONNECT cap raised to 16 MiB)',
  newKeys({ VMQTT_LIMITS_MAX_CONNECT_PACKET_SIZE: String(sixteen) }), connectWithProps(userProps(2_200_000), 'hostile', 'alice', 'wrong'), false)
await pingDuring('SUBSCRIBE 16 MiB, 4M filters (logged in, control packet cap raised to 16 MiB)',
  newKeys({ VMQTT_LIMITS_MAX_CONTROL_PACKET_SIZE: String(sixteen) }), subscribeMany(1, 4_000_000, true), true)

// 3. password guessing from one address; a real login from another address meanwhile
{
  const n = Number(opt.guessers)
  const seconds = Number(opt.seconds)
  await using broker = await BrokerProcess.start({ VMQTT_LOG_LEVEL: 'error', VMQTT_AUTH_PASSWORD_FILE: passwd.path }).then(({ broker, port }) => Object.assign(broker, { port }))
  const real = async () => (await timedLogin(broker.port, { version: 5, username: 'alice', password: 'wonderland' }, '127.0.0.2')).ms
  const idle = [await real(), await real(), await real()]
  const cpu0 = cpuSeconds(broker.proc.pid)
  const t0 = performance.now()
  const stopAt = t0 + seconds * 1000
  const guessing = guessers(broker.port, n, () => 'alice', stopAt)
  const during: number[] = []
  while (performance.now() < stopAt - 1000) during.push(await real())
  const answered = await guessing
  const elapsed = (performance.now() - t0) / 1000
  const cores = (cpuSeconds(broker.proc.pid) - cpu0) / elapsed
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ')
  console.log(`${n} guessers from 127.0.0.1 for ${seconds} s: ${(answered / elapsed).toFixed(2)} answered guesses/s, broker CPU ${cores.toFixed(2)} cores`)
  console.log(`real login from 127.0.0.2: idle ${fmt(idle)} ms; while guessed at ${fmt(during)} ms`)
}

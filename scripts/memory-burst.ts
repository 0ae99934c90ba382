#!/usr/bin/env bun
/**
 * Does memory return after a burst? The broker as a child process (`bun src/main.ts`, memory
 * store), then:
 *   1. --big N clients (default 30) each send a PUBLISH announcing 15.5 MiB (under the default
 *      maximum packet size), 15 MiB of it, and close;
 *   2. --logins N concurrent password logins (default 10; argon2id, 64 MiB each);
 * and RSS is sampled for --settle seconds (default 60) after each burst.
 *   bun scripts/memory-burst.ts [--big 30] [--logins 10] [--settle 60]
 * MIMALLOC_* variables in this environment reach the broker (to compare allocator settings).
 * Exits 1 when RSS is more than 64 MiB above its start-up value at the end (README: Memory).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { addOrUpdateUser } from '../src/auth/password-file.ts'
import { BrokerProcess } from '../test/helpers/fuzz.ts'
import * as b from '../test/helpers/packet-builder.ts'
import { RawClient } from '../test/helpers/raw-client.ts'

const { values } = parseArgs({
  options: {
    big: { type: 'string', default: '30' },
    logins: { type: 'string', default: '10' },
    settle: { type: 'string', default: '60' },
  },
})
const MiB = 1048576
const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`
const TARGET = 64 * MiB

const dir = mkdtempSync(join(tmpdir(), 'vmqtt-burst-'))
try {
  const passwd = join(dir, 'passwd')
  await addOrUpdateUser(passwd, 'alice', 'wonderland')
  await using broker = await BrokerProcess.start({
    VMQTT_LOG_LEVEL: 'error', VMQTT_AUTH_PASSWORD_FILE: passwd, VMQTT_AUTH_ANONYMOUS: 'true', VMQTT_AUTH_FAIL_DELAY: '0',
  }).then(({ broker, port }) => Object.assign(broker, { port }))
  const start = broker.rss()
  console.log(`broker pid ${broker.proc.pid}, MIMALLOC_PURGE_DELAY=${process.env.MIMALLOC_PURGE_DELAY ?? '(vmqtt default)'}, RSS at start ${mib(start)}`)

  /** RSS every 10 s for --settle seconds (the allocator and idle collection work on timers). */
  const settle = async (what: string, peak: number) => {
    const samples: string[] = []
    for (let t = 0; t < Number(values.settle);) {
      const step = Math.min(10, Number(values.settle) - t)
      await Bun.sleep(step * 1000)
      t += step
      samples.push(`${t} s ${mib(broker.rss())}`)
    }
    console.log(`${what}: peak ${mib(peak)}; after ${samples.join(', ')}`)
  }

  const big = Number(values.big)
  if (big > 0) {
    let peak = start
    const chunk = Buffer.alloc(MiB)
    const head = b.publish({ topic: 'big', qos: 0 }).subarray(2)
    const header = Buffer.concat([Buffer.from([0x30, ...b.varint(head.length + 15.5 * MiB)]), head])
    await Promise.all(Array.from({ length: big }, async (_, i) => {
      const { client } = await RawClient.open(broker.port, { version: 4, clientId: `big-${i}` })
      client.send(header)
      for (let n = 0; n < 15; n++) client.send(chunk)
      // the broker holds the incomplete packet; wait until it has most of it (RSS), then go
      for (let k = 0; k < 100 && broker.rss() < start + (i + 1) * 8 * MiB; k++) await Bun.sleep(20)
      peak = Math.max(peak, broker.rss())
      client.destroy()
    }))
    await settle(`${big} clients x 15 MiB incomplete PUBLISH`, peak)
  }

  const logins = Number(values.logins)
  if (logins > 0) {
    let peak = broker.rss()
    const sampler = setInterval(() => { peak = Math.max(peak, broker.rss()) }, 20)
    const codes = await Promise.all(Array.from({ length: logins }, async (_, i) => {
      const client = await RawClient.connect(broker.port, { version: 5 })
      client.send(b.connect({ version: 5, clientId: `login-${i}`, username: 'alice', password: 'wonderland' }))
      // argon2id takes ~0.2 s of a core per login: ten on a busy machine take a while
      const connack = await client.nextOf('connack', 60_000)
      await client.close()
      return connack.cmd === 'connack' ? connack.reasonCode : -1
    })).finally(() => clearInterval(sampler))
    if (codes.some((c) => c !== 0)) console.log(`logins refused: ${codes.join(',')}`)
    await settle(`${logins} concurrent password logins (argon2id)`, peak)
  }
  const grown = broker.rss() - start
  console.log(`end: ${mib(grown)} above start-up (${mib(start)}): ${grown <= TARGET ? 'within' : 'MORE than'} ${mib(TARGET)}`)
  process.exitCode = grown <= TARGET ? 0 : 1
} finally {
  rmSync(dir, { recursive: true, force: true })
}

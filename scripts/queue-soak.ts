#!/usr/bin/env bun
/**
 * Offline-queue soak (issue 13): a persistent subscriber is away while N QoS 1 messages are
 * published for it, then comes back and must get every one, in order. Reports the publish rate,
 * the broker's RSS before, after publishing and after the drain (the queue must not live in
 * memory), and how many acknowledged messages were lost. The broker runs as a child process
 * with its default configuration (SQLite store, fsync) on a temporary data dir.
 *
 *   bun scripts/queue-soak.ts [--messages 600000] [--payload 100] [--window 1000] [--root DIR] [--env K=V,...]
 *
 * --root: a checkout whose src/main.ts runs as the broker (e.g. an older commit, to compare).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { Packet } from 'mqtt-packet'
import * as pb from '../test/helpers/packet-builder.ts'
import { BrokerProcess, Wire, connackCode } from '../test/helpers/torture-clients.ts'

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '600000' },
    payload: { type: 'string', default: '100' },
    window: { type: 'string', default: '1000' },
    root: { type: 'string', default: resolve(import.meta.dir, '..') },
    env: { type: 'string', default: '' },
  },
})
const N = Number(values.messages)
const WINDOW = Number(values.window)
const TOPIC = 'soak/building-07/floor-3/sensor-0042/temperature'
const extraEnv = Object.fromEntries(values.env!.split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]))

const rssMb = (pid: number, key = 'VmRSS') => {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? -1 : Math.round(Number(m[1]) / 1024)
}

const dir = mkdtempSync(join(tmpdir(), 'vmqtt-soak-'))
const complaints: string[] = []
const broker = await BrokerProcess.start(values.root!, {
  VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off',
  VMQTT_SYS_INTERVAL: '0', VMQTT_LOG_LEVEL: 'info', VMQTT_DATA_DIR: dir, ...extraEnv,
}, complaints, 30_000)
const pid = broker.proc.pid
try {
  const wait = (ready: () => boolean) => new Promise<void>((res) => { const t = setInterval(() => { if (ready()) { clearInterval(t); res() } }, 5) })
  // 1. the subscriber makes its persistent session and goes away
  let subacked = false
  const sub1 = await Wire.open(broker.port, 4, pb.connect({ version: 4, clientId: 'soak-sub', clean: false, keepalive: 0 }), {
    connack: (_, p) => connackCode(p) === 0, packet: (_, p) => { if (p.cmd === 'suback') subacked = true }, close: () => {},
  })
  if (sub1 === null) throw new Error('subscriber could not connect')
  sub1.send(pb.subscribe(1, [{ topic: 'soak/#', qos: 1 }], { version: 4 }))
  await wait(() => subacked)
  sub1.end(pb.disconnect({ version: 4 }))
  const rssBefore = rssMb(pid)
  // 2. N QoS 1 messages, WINDOW in flight
  let sent = 0, acked = 0, refused = 0
  const payload = (i: number) => `${i}`.padEnd(Number(values.payload), '.')
  let pubWire: Wire | null = null
  const pump = () => { while (sent < N && sent - acked < WINDOW) { sent++; pubWire!.send(pb.publish({ topic: TOPIC, payload: payload(sent), qos: 1, packetId: ((sent - 1) % 65535) + 1, version: 4 })) } }
  let closed = false
  pubWire = await Wire.open(broker.port, 4, pb.connect({ version: 4, clientId: 'soak-pub', clean: true, keepalive: 0 }), {
    connack: (_, p) => connackCode(p) === 0,
    packet: (_, p: Packet) => { if (p.cmd === 'puback') { acked++; pump() } },
    close: () => { closed = true },
  })
  if (pubWire === null) throw new Error('publisher could not connect')
  const t0 = performance.now()
  pump()
  await wait(() => acked >= N || closed)
  const pubSec = (performance.now() - t0) / 1000
  if (closed && acked < N) refused = N - acked
  const rssAfterPublish = rssMb(pid)
  pubWire.end(pb.disconnect({ version: 4 }))
  // 3. the subscriber comes back and drains its queue
  let received = 0, outOfOrder = 0, last = 0
  const seen = new Set<number>()
  const t1 = performance.now()
  const sub2 = await Wire.open(broker.port, 4, pb.connect({ version: 4, clientId: 'soak-sub', clean: false, keepalive: 0 }), {
    connack: (_, p) => connackCode(p) === 0,
    packet: (w, p) => {
      if (p.cmd !== 'publish') return
      const i = Number.parseInt(Buffer.from(p.payload).toString(), 10)
      if (!seen.has(i)) { seen.add(i); if (i < last) outOfOrder++; last = Math.max(last, i) }
      received++
      w.send(pb.puback(p.messageId!, { version: 4 }))
    },
    close: () => {},
  }, 30_000)
  if (sub2 === null) throw new Error('subscriber could not reconnect')
  let lastCount = -1, still = 0
  await wait(() => { if (seen.size >= acked) return true; if (received === lastCount) still++; else { still = 0; lastCount = received } return still > 2000 })
  const drainSec = (performance.now() - t1) / 1000
  const rssAfterDrain = rssMb(pid)
  sub2.end(pb.disconnect({ version: 4 }))
  console.log(JSON.stringify({
    root: values.root, messages: N, payloadBytes: Number(values.payload), topic: TOPIC, acknowledged: acked, refusedOrUnacked: refused,
    publishMsgsPerSec: Math.round(acked / pubSec), delivered: seen.size, lost: acked - seen.size, outOfOrder, drainSec: Number(drainSec.toFixed(1)),
    rssMb: { beforePublish: rssBefore, afterPublish: rssAfterPublish, afterDrain: rssAfterDrain, peak: rssMb(pid, 'VmHWM') },
    brokerWarnings: complaints.length, firstWarning: complaints[0],
  }))
} finally {
  await broker.stop()
  rmSync(dir, { recursive: true, force: true })
}

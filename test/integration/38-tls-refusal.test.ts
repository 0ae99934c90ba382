/**
 * A refused client certificate (none where one is required, unknown CA, expired) over real TLS
 * sockets, seen by MQTT.js under Node and under Bun (test/helpers/mqttjs-probe.mjs in a
 * separate process): each fails at once with an error instead of retrying until its own
 * timeout. Bun 1.4.4 cannot end such a handshake with a TLS alert (src/transport/tls-refusal.ts),
 * so the CONNECT is answered with CONNACK 0x87 (v5, with a Reason String naming the problem)
 * or 5 (v3), and none of the client's bytes reach the broker.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as tls from 'node:tls'
import { captureLog } from '../helpers/capture-log.ts'
import { makeCerts, type KeyPair, type TestCerts } from '../helpers/certs.ts'
import * as b from '../helpers/packet-builder.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { until } from '../helpers/until.ts'

const PROBE = join(import.meta.dir, '..', 'helpers', 'mqttjs-probe.mjs')
const ROOT = join(import.meta.dir, '..', '..')

let certs: TestCerts
beforeAll(async () => { certs = await makeCerts() })
afterAll(async () => { await certs.cleanup() })

const tlsBroker = (mode: 'require' | 'request') => startBroker({
  VMQTT_TLS_HOST: '127.0.0.1', VMQTT_TLS_PORT: '0', VMQTT_TLS_CERT: certs.server.cert, VMQTT_TLS_KEY: certs.server.key,
  VMQTT_TLS_CA: certs.ca.cert, VMQTT_TLS_CLIENT_CERT: mode,
})

interface Probe { ok: boolean; ms: number; code?: number | string; message: string }

async function probe(runtime: 'node' | 'bun', port: number, version: 4 | 5, client: KeyPair | undefined): Promise<Probe> {
  const args = JSON.stringify({ url: `mqtts://127.0.0.1:${port}`, version, ca: certs.ca.cert, cert: client?.cert, key: client?.key, limitMs: 5000 })
  const exe = runtime === 'node' ? 'node' : process.execPath
  const p = Bun.spawn([exe, PROBE, args], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe', env: { ...process.env, NODE_NO_WARNINGS: '1' } })
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited])
  const line = out.trim().split('\n').pop() ?? ''
  if (!line.startsWith('{')) throw new Error(`probe under ${runtime} printed no result: ${out} ${err}`)
  return JSON.parse(line) as Probe
}

const refused: [string, () => KeyPair | undefined][] = [
  ['no certificate', () => undefined],
  ['a certificate from an unknown CA', () => certs.mallory],
  ['an expired certificate', () => certs.expired],
]

describe('MQTT.js under Node and Bun fails fast when its certificate is refused', () => {
  for (const runtime of ['node', 'bun'] as const) {
    for (const [what, client] of refused) {
      test(`${runtime}, clientCert require, ${what}: an error within 2 s, v3.1.1 and v5`, async () => {
        await using br = await tlsBroker('require')
        const port = br.broker.portOf('mqtts')
        const [v4, v5] = await Promise.all([probe(runtime, port, 4, client()), probe(runtime, port, 5, client())])
        expect({ ok: v4.ok, code: v4.code, message: v4.message }).toEqual({ ok: false, code: 5, message: 'Connection refused: Not authorized' })
        expect({ ok: v5.ok, code: v5.code, message: v5.message }).toEqual({ ok: false, code: 0x87, message: 'Connection refused: Not authorized' })
        expect(Math.max(v4.ms, v5.ms)).toBeLessThan(2000)
        expect(br.broker.onlineCount).toBe(0)
      })
    }
  }

  test('bun, clientCert request, unknown CA: refused the same way; a valid certificate still connects', async () => {
    await using br = await tlsBroker('request')
    const port = br.broker.portOf('mqtts')
    expect(await probe('bun', port, 5, certs.mallory)).toMatchObject({ ok: false, code: 0x87 })
    expect(await probe('bun', port, 5, certs.alice)).toMatchObject({ ok: true })
  })
})

describe('the refused socket', () => {
  test('still counts as a connection (per-address limits, connect timeout) until it closes', async () => {
    const cap = captureLog()
    await using br = await startBroker({
      VMQTT_TLS_HOST: '127.0.0.1', VMQTT_TLS_PORT: '0', VMQTT_TLS_CERT: certs.server.cert, VMQTT_TLS_KEY: certs.server.key,
      VMQTT_TLS_CA: certs.ca.cert, VMQTT_TLS_CLIENT_CERT: 'require',
    }, { log: cap.log })
    const [caPem, cert, key] = await Promise.all([readFile(certs.ca.cert), readFile(certs.mallory.cert), readFile(certs.mallory.key)])
    const s = tls.connect({ host: '127.0.0.1', port: br.broker.portOf('mqtts'), ca: caPem, servername: 'localhost', cert, key })
    s.on('error', () => {})
    await until('the refused handshake', () => cap.matching('TLS handshake failed').length === 1)
    expect(br.broker.connectionCount).toBe(1)
    s.destroy()
    await until('the connection to close', () => br.broker.connectionCount === 0)
  })
})

describe('the refusing CONNACK (raw bytes)', () => {
  test('v5: 0x87 with a Reason String naming the certificate problem; v3.1: return code 5', async () => {
    await using br = await tlsBroker('require')
    const port = br.broker.portOf('mqtts')
    const [caPem, malloryCert, malloryKey] = await Promise.all([readFile(certs.ca.cert), readFile(certs.mallory.cert), readFile(certs.mallory.key)])
    const exchange = (version: 3 | 5) => new Promise<Buffer>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost', cert: malloryCert, key: malloryKey })
      let buf = Buffer.alloc(0)
      s.on('secureConnect', () => s.write(b.connect({ version, clientId: 'refused' })))
      s.on('data', (d: Buffer) => { buf = Buffer.concat([buf, d]) })
      s.on('error', reject)
      s.on('close', () => resolve(buf))
    })
    const reason = 'TLS client certificate refused: certificate signed by unknown authority'
    const v5 = b.connack({ version: 5, code: 0x87, properties: { reasonString: reason } })
    expect((await exchange(5)).toString('hex')).toBe(v5.toString('hex'))
    expect((await exchange(3)).toString('hex')).toBe('20020005')
  })
})

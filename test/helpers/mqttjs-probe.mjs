/**
 * One MQTT.js connection attempt with its default options (reconnect on), run as a separate
 * process under `node` or `bun` so a test can compare runtimes: prints one JSON line
 * { ok, ms, code, message } and exits. Arguments: a JSON object { url, version, ca, cert, key,
 * limitMs } (file paths for ca/cert/key). A client that neither connects nor fails within
 * limitMs prints ok false with message "no answer".
 */
import { readFileSync } from 'node:fs'
import mqtt from 'mqtt'

const o = JSON.parse(process.argv[2] ?? '{}')
const read = (f) => (f ? readFileSync(f) : undefined)
const t0 = Date.now()
const done = (r) => { process.stdout.write(`${JSON.stringify({ ...r, ms: Date.now() - t0 })}\n`); process.exit(0) }
setTimeout(() => done({ ok: false, message: 'no answer' }), o.limitMs ?? 5000)
try {
  const c = await mqtt.connectAsync(o.url, {
    protocolVersion: o.version ?? 4, ca: read(o.ca), cert: read(o.cert), key: read(o.key), connectTimeout: 30_000,
  })
  await c.endAsync()
  done({ ok: true })
} catch (e) {
  done({ ok: false, code: e.code, message: String(e.message) })
}

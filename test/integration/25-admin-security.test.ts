/**
 * The admin API behind its bearer token (issue 5): /health and /ready stay open, /api/* needs
 * `Authorization: Bearer <VMQTT_ADMIN_TOKEN>` (401 otherwise, and while no token is set),
 * kicking a client (v5 DISCONNECT 0x98), reloading files through the API and on SIGHUP, and
 * the audit lines these actions leave.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startAdmin } from '../../src/admin/app.ts'
import * as b from '../helpers/packet-builder.ts'
import { readLogLines } from '../helpers/log-lines.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'

const ROOT = join(import.meta.dir, '..', '..')
const TOKEN = 'test-only-admin-token-0123456789'
const dir = mkdtempSync(join(tmpdir(), 'vmqtt-admin-sec-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

async function withAdmin(env: Record<string, string>, body: (api: (path: string, init?: RequestInit) => Promise<Response>, port: number) => Promise<void>) {
  await using br = await startBroker({ VMQTT_ADMIN_PORT: '0', VMQTT_ADMIN_HOST: '127.0.0.1', ...env })
  const admin = startAdmin(br.broker)!
  try {
    await body((path, init) => fetch(`http://127.0.0.1:${admin.port}${path}`, init), br.port)
  } finally {
    admin.stop()
  }
}

const auth = (token = TOKEN) => ({ headers: { authorization: `Bearer ${token}` } })

describe('admin token', () => {
  test('without a configured token /api answers 401 and says how to turn it on; /health and /ready stay open', async () => {
    await withAdmin({}, async (api) => {
      expect((await api('/health')).status).toBe(200)
      expect((await api('/ready')).status).toBe(200)
      const r = await api('/api/v1/clients', auth())
      expect(r.status).toBe(401)
      expect(JSON.stringify(await r.json())).toContain('VMQTT_ADMIN_TOKEN')
    })
  })

  test('with a token: missing or wrong bearer → 401, the right one → the client list', async () => {
    await withAdmin({ VMQTT_ADMIN_TOKEN: TOKEN }, async (api, port) => {
      const { client } = await RawClient.open(port, { version: 5, clientId: 'listed', username: 'u1' })
      try {
        expect((await api('/api/v1/clients')).status).toBe(401)
        expect((await api('/api/v1/clients', auth('wrong-token'))).status).toBe(401)
        const ok = await api('/api/v1/clients', auth())
        expect(ok.status).toBe(200)
        const list = await ok.json() as { clientId: string; username: string; listener: string }[]
        expect(list).toContainEqual(expect.objectContaining({ clientId: 'listed', username: 'u1', listener: 'mqtt' }))
        expect((await api('/health')).status).toBe(200)
      } finally {
        client.close()
      }
    })
  })
})

describe('admin actions', () => {
  test('DELETE /api/v1/clients/:id disconnects a v5 client with 0x98 and is audited', async () => {
    const auditFile = join(dir, 'kick-audit.log')
    await withAdmin({ VMQTT_ADMIN_TOKEN: TOKEN, VMQTT_AUDIT_LOG: auditFile }, async (api, port) => {
      const { client } = await RawClient.open(port, { version: 5, clientId: 'kick-me' })
      const r = await api('/api/v1/clients/kick-me', { method: 'DELETE', ...auth() })
      expect(r.status).toBe(200)
      const d = await client.nextOf('disconnect')
      expect(d.cmd === 'disconnect' ? d.reasonCode : -1).toBe(0x98)
      await client.closed()
      expect((await api('/api/v1/clients/kick-me', { method: 'DELETE', ...auth() })).status).toBe(404)
      const events = readFileSync(auditFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(events).toContainEqual(expect.objectContaining({ event: 'admin', action: 'kick', clientId: 'kick-me', listener: 'admin' }))
      expect(events).toContainEqual(expect.objectContaining({ event: 'kick', clientId: 'kick-me', reason: 'admin' }))
    })
  })

  test('POST /api/v1/reload applies a changed ACL; a broken one is refused with file:line and the old rules stay', async () => {
    const acl = join(dir, 'reload.acl')
    writeFileSync(acl, 'allow all subscribe open/#\n')
    // watching is on too; the API reload must work on its own, so the check runs right after the call
    await withAdmin({ VMQTT_ADMIN_TOKEN: TOKEN, VMQTT_ACL_FILE: acl }, async (api, port) => {
      const { client } = await RawClient.open(port, { version: 5, clientId: 'acl-reload' })
      try {
        client.send(b.subscribe(1, [{ topic: 'later/x', qos: 0 }], { version: 5 }))
        const before = await client.nextOf('suback')
        expect(before.cmd === 'suback' ? before.granted : []).toEqual([0x87])
        writeFileSync(acl, 'allow all subscribe open/#\nallow all subscribe later/#\n')
        const r = await api('/api/v1/reload', { method: 'POST', ...auth() })
        expect(r.status).toBe(200)
        client.send(b.subscribe(2, [{ topic: 'later/x', qos: 0 }], { version: 5 }))
        const after = await client.nextOf('suback')
        expect(after.cmd === 'suback' ? after.granted : []).toEqual([0])

        writeFileSync(acl, 'allow all subscribe open/#\nallow everyone subscribe later/#\n')
        const bad = await api('/api/v1/reload', { method: 'POST', ...auth() })
        expect(bad.status).toBe(500)
        const body = await bad.json() as { errors: string[] }
        expect(body.errors.join('\n')).toContain(`${acl}:2`)
        client.send(b.subscribe(3, [{ topic: 'later/y', qos: 0 }], { version: 5 }))
        const still = await client.nextOf('suback')
        expect(still.cmd === 'suback' ? still.granted : []).toEqual([0])
      } finally {
        client.close()
      }
    })
  })
})

test('SIGHUP re-reads the files without a restart', async () => {
  const acl = join(dir, 'sighup.acl')
  writeFileSync(acl, 'allow all subscribe a/#\n')
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VMQTT_') && v !== undefined) env[k] = v
  const proc = Bun.spawn([process.execPath, 'src/main.ts'], {
    cwd: ROOT, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe',
    env: { ...env, VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off', VMQTT_DATA_STORE: 'memory', VMQTT_SYS_INTERVAL: '0', VMQTT_ACL_FILE: acl },
  })
  const lines: Record<string, unknown>[] = []
  let wake = () => {}
  const reading = readLogLines(proc.stdout, lines, () => wake())
  const waitFor = (msg: string) => new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no log line "${msg}" in ${JSON.stringify(lines)}`)), 8000)
    const check = () => { const hit = lines.find((l) => l.msg === msg); if (hit) { clearTimeout(timer); resolve(hit) } }
    wake = check
    check()
  })
  try {
    const listening = await waitFor('mqtt listening')
    const port = listening.port as number
    const { client } = await RawClient.open(port, { version: 5, clientId: 'hup' })
    try {
      writeFileSync(acl, 'allow all subscribe a/#\nallow all subscribe b/#\n')
      proc.kill('SIGHUP')
      const done = await waitFor('configuration files reloaded')
      expect(done.errors).toBe(0)
      client.send(b.subscribe(1, [{ topic: 'b/1', qos: 0 }], { version: 5 }))
      const ack = await client.nextOf('suback')
      expect(ack.cmd === 'suback' ? ack.granted : []).toEqual([0])
    } finally {
      client.close()
    }
  } finally {
    proc.kill('SIGKILL')
    await proc.exited
    await reading
  }
})

import { Hono } from 'hono'
import { bearerAuth } from 'hono/bearer-auth'
import { getConnInfo } from 'hono/bun'
import type { Context } from 'hono'
import type { Broker } from '../broker/broker.ts'
import { clip, identity } from '../auth/audit.ts'
import { RC } from '../codec/reason-codes.ts'
import { VERSION } from '../broker/sys-topics.ts'

/**
 * The admin HTTP API. /health and /ready are open (for load balancers and orchestrators);
 * everything under /api needs `Authorization: Bearer <admin.token>`, and answers 401 while
 * no token is configured. Admin actions go to the audit log.
 */
export function createAdminApp(broker: Broker): Hono {
  const app = new Hono()
  // open to anyone who can reach the port: the status only (version, uptime and counts are in /api/v1/stats)
  app.get('/health', (c) => c.json({ status: 'ok' }))
  app.get('/ready', (c) => {
    const ready = !broker.closing && (broker.config.mqtt.port === 'off' || broker.listeners.length > 0)
    return c.json({ ready }, ready ? 200 : 503)
  })
  const token = broker.config.admin.token
  const peer = (c: Context) => { try { return getConnInfo(c).remote.address } catch { return undefined } }
  const audit = (action: string, c: Context, fields: Record<string, unknown> = {}) =>
    broker.security?.audit.event('admin', { action, address: peer(c), listener: 'admin', ...fields })
  const bearer = bearerAuth({ token })
  app.use('/api/*', token === ''
    ? async (c) => c.json({ error: 'the admin API is off: set admin.token (VMQTT_ADMIN_TOKEN)' }, 401)
    : async (c, next) => {
      let passed = false
      try {
        return await bearer(c, () => { passed = true; return next() })
      } catch (e) {
        // a wrong, missing or malformed token is logged and audited, a few lines a second per address at most
        const address = peer(c) ?? ''
        const suppressed = passed ? -1 : broker.lineThrottle.take(`admin-auth\u0000${address}`)
        if (suppressed >= 0) {
          const fields = { action: 'auth-failed', address, listener: 'admin', method: c.req.method, path: clip(c.req.path), ...(suppressed > 0 ? { suppressed } : {}) }
          broker.log.warn('admin API: wrong or missing token', fields)
          broker.security?.audit.event('admin', fields)
        }
        throw e
      }
    })
  app.get('/api/v1/stats', (c) => c.json({
    ...broker.stats, drops: broker.drops, connections: broker.onlineCount, sessions: broker.sessions.size, memory: broker.memory.snapshot(),
    version: VERSION, uptime: Math.floor((Date.now() - broker.startedAt) / 1000),
  }))
  app.get('/api/v1/clients', (c) => c.json(broker.allConnections().filter((x) => x.state === 'connected').map((x) => ({
    clientId: x.clientId, username: x.username ?? null, address: x.socket.remoteAddress, listener: x.listener,
    version: x.version, keepalive: x.keepalive, connectedFor: Math.floor((Date.now() - x.openedAt) / 1000),
  }))))
  const kick = (c: Context, id: string) => {
    const conn = broker.connectionOf(id)
    if (conn === undefined) return c.json({ error: `client ${id} is not connected` }, 404)
    audit('kick', c, { clientId: id })
    broker.security?.audit.event('kick', { ...identity(conn), reason: 'admin' })
    conn.disconnect(RC.ADMINISTRATIVE_ACTION, 'disconnected by an administrator')
    return c.json({ kicked: id })
  }
  // ?id= names any client id, also one a URL path cannot carry (".", "..", which URL parsing removes)
  app.delete('/api/v1/clients', (c) => {
    const id = c.req.query('id')
    return id === undefined ? c.json({ error: 'name the client: DELETE /api/v1/clients?id=<client id>' }, 400) : kick(c, id)
  })
  app.delete('/api/v1/clients/:id', (c) => kick(c, c.req.param('id')))
  app.post('/api/v1/reload', async (c) => {
    const errors = await broker.reload()
    audit('reload', c, { errors })
    return c.json({ ok: errors.length === 0, errors }, errors.length === 0 ? 200 : 500)
  })
  return app
}

export interface AdminServer {
  port: number
  stop(): void
}

export function startAdmin(broker: Broker): AdminServer | null {
  const { host, port } = broker.config.admin
  if (port === 'off') return null
  const app = createAdminApp(broker)
  const server = Bun.serve({ hostname: host, port, fetch: app.fetch })
  broker.log.info('admin listening', { host, port: server.port })
  return { port: server.port ?? 0, stop: () => server.stop(true) }
}

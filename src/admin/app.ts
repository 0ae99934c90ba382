import { Hono } from 'hono'
import { bearerAuth } from 'hono/bearer-auth'
import { getConnInfo } from 'hono/bun'
import type { Context } from 'hono'
import type { Broker } from '../broker/broker.ts'
import { identity } from '../auth/audit.ts'
import { RC } from '../codec/reason-codes.ts'
import { VERSION } from '../broker/sys-topics.ts'

/**
 * The admin HTTP API. /health and /ready are open (for load balancers and orchestrators);
 * everything under /api needs `Authorization: Bearer <admin.token>`, and answers 401 while
 * no token is configured. Admin actions go to the audit log.
 */
export function createAdminApp(broker: Broker): Hono {
  const app = new Hono()
  app.get('/health', (c) => c.json({ status: 'ok', version: VERSION, uptime: Math.floor((Date.now() - broker.startedAt) / 1000) }))
  app.get('/ready', (c) => {
    const ready = !broker.closing && (broker.config.mqtt.port === 'off' || broker.listeners.length > 0)
    return c.json({ ready, connections: broker.onlineCount }, ready ? 200 : 503)
  })
  const token = broker.config.admin.token
  const peer = (c: Context) => { try { return getConnInfo(c).remote.address } catch { return undefined } }
  const audit = (action: string, c: Context, fields: Record<string, unknown> = {}) =>
    broker.security?.audit.event('admin', { action, address: peer(c), listener: 'admin', ...fields })
  app.use('/api/*', token === ''
    ? async (c) => c.json({ error: 'the admin API is off: set admin.token (VMQTT_ADMIN_TOKEN)' }, 401)
    : bearerAuth({ token }))
  app.get('/api/v1/stats', (c) => c.json({ ...broker.stats, connections: broker.onlineCount, sessions: broker.sessions.size, memory: broker.memory.snapshot() }))
  app.get('/api/v1/clients', (c) => c.json(broker.allConnections().filter((x) => x.state === 'connected').map((x) => ({
    clientId: x.clientId, username: x.username ?? null, address: x.socket.remoteAddress, listener: x.listener,
    version: x.version, keepalive: x.keepalive, connectedFor: Math.floor((Date.now() - x.openedAt) / 1000),
  }))))
  app.delete('/api/v1/clients/:id', (c) => {
    const id = c.req.param('id')
    const conn = broker.connectionOf(id)
    if (conn === undefined) return c.json({ error: `client ${id} is not connected` }, 404)
    audit('kick', c, { clientId: id })
    broker.security?.audit.event('kick', { ...identity(conn), reason: 'admin' })
    conn.disconnect(RC.ADMINISTRATIVE_ACTION, 'disconnected by an administrator')
    return c.json({ kicked: id })
  })
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

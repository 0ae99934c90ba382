import { Hono } from 'hono'
import type { Broker } from '../broker/broker.ts'
import { VERSION } from '../broker/sys-topics.ts'

/** The admin HTTP API. This issue wires health and readiness; the full API comes later. */
export function createAdminApp(broker: Broker): Hono {
  const app = new Hono()
  app.get('/health', (c) => c.json({ status: 'ok', version: VERSION, uptime: Math.floor((Date.now() - broker.startedAt) / 1000) }))
  app.get('/ready', (c) => {
    const ready = !broker.closing && (broker.config.mqtt.port === 'off' || broker.listeners.length > 0)
    return c.json({ ready, connections: broker.onlineCount }, ready ? 200 : 503)
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

import { RC } from '../codec/reason-codes.ts'
import type { Broker } from './broker.ts'
import { isExpired, unpersist } from './deliver.ts'
import { publishWill } from './will.ts'

/**
 * Runs twice a second: connect timeouts, keepalive timeouts (1.5 x keepalive [MQTT-3.1.2-22]),
 * delayed wills, session expiry and expired queued messages.
 */
export function sweep(broker: Broker): void {
  const now = Date.now()
  const connectTimeout = broker.config.mqtt.connectTimeout * 1000
  for (const conn of broker.connections) {
    if (conn.state === 'new' || conn.state === 'authenticating') {
      if (now - conn.openedAt > connectTimeout) {
        broker.log.info('closing connection: no CONNECT in time', { remote: conn.socket.remoteAddress })
        conn.end()
      }
    } else if (conn.state === 'connected' && conn.keepalive > 0 && now - conn.lastRx > conn.keepalive * 1500) {
      broker.log.info('closing connection: keepalive timeout', { clientId: conn.clientId })
      conn.disconnect(RC.KEEP_ALIVE_TIMEOUT, 'keep alive timeout')
    }
  }
  for (const s of broker.sessions.values()) {
    if (s.disconnectedAt === 0) continue
    if (s.pendingWill !== null && s.pendingWillAt <= now) {
      const w = s.pendingWill
      s.pendingWill = null
      publishWill(broker, w)
      broker.saveSession(s)
    }
    if (s.expiresAt() <= now) {
      broker.log.debug('session expired', { clientId: s.clientId })
      broker.endSession(s)
      continue
    }
    if (s.queue.length > 0) {
      s.queue = s.queue.filter((d) => {
        if (!isExpired(d, now)) return true
        unpersist(s, d)
        return false
      })
    }
  }
}

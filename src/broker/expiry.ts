import { RC } from '../codec/reason-codes.ts'
import type { Broker } from './broker.ts'
import { drainQueue, isExpired } from './deliver.ts'
import { countDrop, flushDropLog, unpersist } from './queue.ts'
import { packetTimedOut, pruneAddresses } from './limits.ts'
import { pendingWillAllowed } from './ownership.ts'
import { publishWill } from './will.ts'

const RETAINED_SWEEP_MS = 60_000
const lastRetainedSweep = new WeakMap<Broker, number>()

/**
 * Runs twice a second: connect timeouts, packet timeouts (limits.packetTimeout), keepalive timeouts (1.5 x keepalive [MQTT-3.1.2-22]),
 * delayed wills, session expiry, expired queued messages, and (every minute) expired retained messages.
 */
export function sweep(broker: Broker): void {
  const now = Date.now()
  if (now - (lastRetainedSweep.get(broker) ?? broker.startedAt) >= RETAINED_SWEEP_MS) {
    lastRetainedSweep.set(broker, now)
    sweepRetained(broker, now)
    broker.security?.prune(now)
  }
  const connectTimeout = broker.config.mqtt.connectTimeout * 1000
  const packetTimeout = broker.config.limits.packetTimeout * 1000
  pruneAddresses(broker, now)
  for (const conn of broker.allConnections()) {
    // slow-loris: a packet trickling in for longer than limits.packetTimeout
    const framer = conn.framer
    if (framer !== null && framer.buffered > 0 && now - framer.partialSince > packetTimeout) {
      packetTimedOut(broker)
      broker.log.info('closing connection: packet not completed in time', {
        clientId: conn.clientId || undefined, remote: conn.socket.remoteAddress, buffered: framer.buffered, packetTimeout: packetTimeout / 1000,
      })
      conn.end()
      continue
    }
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
  let queued = 0
  for (const s of broker.sessions.values()) {
    if (s.dropLog !== null) flushDropLog(s, now)
    // a page of the queue that could not be read from the store (queue.ts): try again
    if (s.connection !== null && s.inflightCount === 0 && s.queuedCount > 0) drainQueue(s.connection, s)
    // the memory budget's estimate of queued messages, taken in this pass over the sessions
    if (s.queuedCount > 0) queued += broker.memory.sampleQueue(s)
    if (s.disconnectedAt === 0) continue
    if (s.pendingWill !== null && s.pendingWillAt <= now) {
      const w = s.pendingWill
      s.pendingWill = null
      if (pendingWillAllowed(broker, s, w, 'at publication')) publishWill(broker, w)
      broker.saveSession(s)
    }
    if (s.expiresAt() <= now) {
      broker.log.debug('session expired', { clientId: s.clientId })
      broker.endSession(s)
      continue
    }
    if (s.headCount > 0) {
      s.queue = s.queue.filter((d) => {
        if (!isExpired(d, now)) return true
        unpersist(s, d)
        countDrop(s.policy, 'expired')
        return false
      })
    }
  }
  broker.memory.setQueued(queued)
}

/** Deletes retained messages whose Message Expiry Interval has passed, so they stop using space. */
export function sweepRetained(broker: Broker, now: number): void {
  const expired: string[] = []
  for (const msg of broker.store.allRetained()) if (msg.expiresAt > 0 && msg.expiresAt <= now) expired.push(msg.topic)
  for (const topic of expired) broker.store.deleteRetained(topic)
}

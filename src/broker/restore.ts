import type { Session } from '../session/session.ts'
import type { Will } from '../session/types.ts'
import type { Broker } from './broker.ts'
import { pendingWillAllowed } from './ownership.ts'
import { restoreReader } from './read-access.ts'
import { publishWill } from './will.ts'

/**
 * Rebuilds sessions from the store at start: subscriptions, outbox (inflight entries resent
 * with DUP on reconnect, queued ones delivered), inbound QoS 2 state and wills. A session whose
 * client was connected when the broker stopped counts as disconnected now, abnormally: its
 * will is published (after its delay) [MQTT-3.1.2-8].
 */
export function restore(broker: Broker): void {
  const now = Date.now()
  const { sessions, outbox, queued, inboundQos2 } = broker.store.load()
  const willsNow: [Session, Will][] = []
  for (const rec of sessions) {
    const s = broker.createSession(rec.clientId, rec.version)
    s.expiryInterval = rec.expiryInterval
    broker.sessionOwners.own(s, rec.owner ?? undefined)
    // its messages are checked against the ACL before its client returns (read-access.ts)
    restoreReader(broker, s)
    s.store = broker.store
    const wasConnected = rec.disconnectedAt === 0
    s.disconnectedAt = wasConnected ? now : rec.disconnectedAt
    for (const sub of rec.subscriptions) broker.addSubscription(s, sub)
    for (const e of outbox.get(rec.clientId) ?? []) {
      if (e.seq >= s.nextSeq) s.nextSeq = e.seq + 1
      s.inflight.set(e.packetId, { packetId: e.packetId, delivery: e.delivery, state: e.state as 'publish' | 'pubrel' })
    }
    // the queue stays in the store: read in pages when the client is back (Session.shiftQueued)
    const q = queued.get(rec.clientId)
    if (q !== undefined) {
      if (q.lastSeq >= s.nextSeq) s.nextSeq = q.lastSeq + 1
      s.restoreSpill(q.count, q.bytes)
    }
    for (const id of inboundQos2.get(rec.clientId) ?? []) s.addQos2(id)
    if (rec.will !== null) {
      if (!wasConnected) {
        s.pendingWill = rec.will
        s.pendingWillAt = rec.willAt
      } else if (rec.will.delay > 0 && s.expiryInterval > 0) {
        s.pendingWill = rec.will
        s.pendingWillAt = now + Math.min(rec.will.delay, s.expiryInterval) * 1000
      } else {
        willsNow.push([s, rec.will])
      }
    }
    if (wasConnected) broker.saveSession(s)
  }
  for (const [s, w] of willsNow) if (pendingWillAllowed(broker, s, w, 'at publication')) publishWill(broker, w)
  if (sessions.length > 0) {
    broker.log.info('sessions restored', {
      sessions: sessions.length,
      queued: [...queued.values()].reduce((a, q) => a + q.count, 0),
      retained: broker.store.retainedCount(),
    })
  }
}

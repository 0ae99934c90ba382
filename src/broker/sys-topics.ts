import pkg from '../../package.json' with { type: 'json' }
import type { Message } from '../codec/message.ts'
import { DROP_REASONS } from '../session/queue-policy.ts'
import type { Broker } from './broker.ts'
import { route } from './route.ts'

export const VERSION: string = pkg.version

/** Publishes broker statistics under $SYS/broker/ as retained QoS 0 messages. They are kept
 * apart from clients' retained messages: not persisted, not counted against the limit. */
export function publishSys(broker: Broker): void {
  const st = broker.stats
  const mem = broker.memory
  let subscriptions = 0
  for (const s of broker.sessions.values()) subscriptions += s.subscriptionCount
  const values: [string, string | number][] = [
    ['version', `vmqtt ${VERSION}`],
    ['uptime', `${Math.floor((Date.now() - broker.startedAt) / 1000)} seconds`],
    ['clients/connected', broker.onlineCount],
    ['clients/total', broker.sessions.size],
    ['subscriptions/count', subscriptions],
    ['retained messages/count', broker.store.retainedCount()],
    ['messages/received', st.msgsIn],
    ['messages/sent', st.msgsOut],
    ['messages/dropped', st.dropped],
    ...DROP_REASONS.map((r): [string, number] => [`messages/dropped/${r}`, broker.drops[r]]),
    ['messages/refused', st.refused],
    ['bytes/received', st.bytesIn],
    ['bytes/sent', st.bytesOut],
    ['memory/limit', mem.limit === Infinity ? 0 : mem.limit],
    ['memory/used', mem.used],
    ['memory/dropped', mem.counters.qos0Dropped],
    ['memory/disconnected', mem.counters.disconnected],
    ['memory/refused', mem.counters.refused],
    ['memory/queue-trimmed', mem.counters.queueTrimmed],
  ]
  for (const [topic, value] of values) {
    const msg: Message = {
      topic: `$SYS/broker/${topic}`, payload: Buffer.from(String(value)), qos: 0, retain: true,
      props: null, expiresAt: 0, origin: '',
    }
    broker.sysRetained.set(msg.topic, msg)
    // routed directly: broker statistics are not counted as received messages
    route(broker, msg)
  }
}

import type { Message } from '../codec/message.ts'
import { compactMessage } from '../codec/slab.ts'
import type { Will } from '../session/types.ts'
import type { Broker } from './broker.ts'
import { retainedSize } from '../store/types.ts'
import { clip } from '../auth/audit.ts'

/** Publishes a will message as if its client had published it; its expiry starts now. */
export function publishWill(broker: Broker, will: Will): void {
  const msg = will.expiry >= 0 ? { ...will.msg, expiresAt: Date.now() + will.expiry * 1000 } : will.msg
  broker.log.debug('publishing will', { clientId: msg.origin, topic: msg.topic })
  if (msg.retain) storeRetained(broker, msg)
  broker.publish(msg)
}

/** [MQTT-3.3.1-5] store a retained message; [MQTT-3.3.1-6] an empty payload deletes it. */
export function storeRetained(broker: Broker, msg: Message): void {
  const store = broker.store
  if (msg.payload.length === 0) {
    store.deleteRetained(msg.topic)
    return
  }
  const lim = broker.config.limits
  const old = store.getRetained(msg.topic)
  if (old === undefined && store.retainedCount() >= lim.maxRetainedMessages) return notRetained(broker, msg, 'limits.maxRetainedMessages', lim.maxRetainedMessages)
  // bytes, as Mosquitto's and EMQX's retained limits: the message is still delivered, only not kept
  if (lim.maxRetainedBytes > 0 && store.retainedBytes() + retainedSize(msg) - (old === undefined ? 0 : retainedSize(old)) > lim.maxRetainedBytes) {
    return notRetained(broker, msg, 'limits.maxRetainedBytes', lim.maxRetainedBytes)
  }
  // kept until replaced: not as a view that holds a whole slab or read buffer
  compactMessage(msg)
  store.setRetained(msg)
}

/** A retained message over a limit: delivered, not kept; a few warnings a second at most. */
function notRetained(broker: Broker, msg: Message, limit: string, value: number): void {
  broker.stats.retainedRefused++
  const suppressed = broker.lineThrottle.take(limit)
  if (suppressed < 0) return
  broker.log.warn(`retained message limit reached (${limit} ${value}); message delivered but not retained`, {
    topic: clip(msg.topic), clientId: clip(msg.origin), bytes: msg.payload.length, ...(suppressed > 0 ? { suppressed } : {}),
  })
}

import type { Message } from '../codec/message.ts'
import { compactMessage } from '../codec/slab.ts'
import type { Will } from '../session/types.ts'
import type { Broker } from './broker.ts'

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
  if (store.getRetained(msg.topic) === undefined && store.retainedCount() >= broker.config.limits.maxRetainedMessages) {
    broker.log.warn('retained message limit reached; message not retained', { topic: msg.topic })
    return
  }
  // kept until replaced: not as a view that holds a whole slab or read buffer
  compactMessage(msg)
  store.setRetained(msg)
}

import type { QoS } from 'mqtt-packet'
import type { ReadRules } from '../auth/read-rules.ts'
import type { Message } from '../codec/message.ts'

/** One subscription of a session, as granted. */
export interface Subscription {
  clientId: string
  /** The filter as the client sent it (including any $share/{group}/ prefix). */
  raw: string
  /** The filter without the $share prefix. */
  filter: string
  group: string | null
  qos: QoS
  noLocal: boolean
  retainAsPublished: boolean
  retainHandling: 0 | 1 | 2
  /** Subscription Identifier, 0 when none. */
  subId: number
  /** Which of its topics its client may read (read-access.ts); not stored. */
  read?: SubscriptionRead | null
}

/** The read rules that apply to a subscription's topics (null: all readable), under which rules version. */
export interface SubscriptionRead {
  epoch: number
  rules: ReadRules | null
}

/** A message on its way to one session, after aggregation of overlapping subscriptions. */
export interface Delivery {
  msg: Message
  qos: QoS
  retain: boolean
  subIds: number[] | null
  /** Position in the session's durable outbox; 0 while not stored. */
  seq?: number
}

/** An outbound QoS 1/2 message awaiting acknowledgement. */
export interface Inflight {
  packetId: number
  delivery: Delivery
  /** 'publish': PUBLISH sent, awaiting PUBACK/PUBREC; 'pubrel': PUBREL sent, awaiting PUBCOMP. */
  state: 'publish' | 'pubrel'
}

/** A will message held for a connection. */
export interface Will {
  msg: Message
  /** Will Delay Interval in seconds. */
  delay: number
  /** Message Expiry Interval in seconds, counted from publication; -1 = none. */
  expiry: number
}

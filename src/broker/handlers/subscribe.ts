import type { ISubscribePacket, Packet, QoS } from 'mqtt-packet'
import { MqttError, RC } from '../../codec/reason-codes.ts'
import type { Message } from '../../codec/message.ts'
import type { Subscription } from '../../session/types.ts'
import { filterMatches } from '../../topic/match.ts'
import { controlCharacterError, filterSyntaxError, parseShared, topicFilterError } from '../../topic/validate.ts'
import type { Connection } from '../connection.ts'
import { mayRead } from '../read-access.ts'
import { identity } from '../../auth/audit.ts'

/** SUBSCRIBE: validate each filter, grant QoS, answer SUBACK, then send retained messages. */
export function handleSubscribe(conn: Connection, packet: Packet): void {
  const p = packet as ISubscribePacket
  const broker = conn.broker
  const lim = broker.config.limits
  const s = conn.session!
  // [MQTT-2.2.1-3] SUBSCRIBE needs a non-zero packet identifier
  if (!p.messageId) throw new MqttError(RC.MALFORMED_PACKET, 'SUBSCRIBE with packet identifier 0')
  // [MQTT-3.8.3-2] at least one topic filter
  if (p.subscriptions.length === 0) throw new MqttError(RC.PROTOCOL_ERROR, 'SUBSCRIBE with no topic filters')
  const subId = p.properties?.subscriptionIdentifier ?? 0
  if (conn.v5 && p.properties?.subscriptionIdentifier !== undefined) {
    if (!lim.subscriptionIdentifiers) throw new MqttError(RC.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, 'subscription identifiers not supported')
    if (subId === 0) throw new MqttError(RC.PROTOCOL_ERROR, 'subscription identifier 0')
  }
  const failure = conn.v5 ? RC.TOPIC_FILTER_INVALID : 0x80
  const granted: number[] = []
  const retainedFor: Subscription[] = []
  /** Positions in `granted` of subscriptions made by this packet. */
  const added: number[] = []
  let tooMany = 0
  // MQTT 3.1.1: an empty or invalid filter is a protocol violation ([MQTT-4.7.3-1]
  // [MQTT-4.7.1-2] [MQTT-4.7.1-3]); the connection is closed [MQTT-4.8.0-1] before anything
  // of the packet takes effect. MQTT 5 answers 0x8F for that filter.
  if (!conn.v5) for (const req of p.subscriptions) rejectV3Filter(req.topic, lim.allowControlCharacters)
  for (const req of p.subscriptions) {
    const parsed = parseShared(req.topic)
    if (typeof parsed === 'string') { granted.push(failure); continue }
    const err = topicFilterError(parsed.filter, broker.topicLimits) ??
      (parsed.group !== null && !lim.allowControlCharacters ? controlCharacterError(parsed.group) : null)
    if (err !== null) {
      broker.log.debug('subscription refused', { clientId: conn.clientId, filter: req.topic, error: err })
      granted.push(failure)
      continue
    }
    if (parsed.group !== null) {
      if (!lim.sharedSubscriptions) { granted.push(conn.v5 ? RC.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED : 0x80); continue }
      // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error
      if (conn.v5 && req.nl) throw new MqttError(RC.PROTOCOL_ERROR, 'No Local set on a shared subscription')
    }
    if (!lim.wildcardSubscriptions && (parsed.filter.includes('+') || parsed.filter.includes('#'))) {
      granted.push(conn.v5 ? RC.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED : 0x80)
      continue
    }
    const sec = broker.security
    if (sec !== null && !sec.authorize(conn, 'subscribe', parsed.filter)) {
      // shared subscriptions are checked by their filter, like any other
      sec.audit.denied(conn, { ...identity(conn), action: 'subscribe', topic: req.topic })
      granted.push(conn.v5 ? RC.NOT_AUTHORIZED : 0x80)
      continue
    }
    const qos = Math.min(req.qos, lim.maxQos) as QoS
    const sub: Subscription = {
      clientId: s.clientId, raw: req.topic, filter: parsed.filter, group: parsed.group, qos,
      noLocal: conn.v5 ? req.nl === true : false,
      retainAsPublished: conn.v5 ? req.rap === true : false,
      retainHandling: conn.v5 ? ((req.rh ?? 0) as 0 | 1 | 2) : 0,
      subId: conn.v5 ? subId : 0,
    }
    // [MQTT-3.8.4-3] a subscription with the same filter replaces the old one
    const existed = s.getSubscription(req.topic) !== undefined
    if (!existed && lim.maxSubscriptions > 0 && s.subscriptionCount >= lim.maxSubscriptions) {
      tooMany++
      granted.push(conn.v5 ? RC.QUOTA_EXCEEDED : 0x80)
      continue
    }
    if (existed) broker.removeSubscription(s, req.topic)
    broker.addSubscription(s, sub)
    added.push(granted.length)
    granted.push(qos)
    // [MQTT-3.3.1-10] retain handling 0: send; 1: only if new; 2: never. Not for shared subscriptions.
    if (sub.group === null && (sub.retainHandling === 0 || (sub.retainHandling === 1 && !existed))) retainedFor.push(sub)
  }
  // one line per SUBSCRIBE packet, however many of its filters were over the limit
  if (tooMany > 0) broker.log.info('subscriptions refused: too many subscriptions', { clientId: conn.clientId, max: lim.maxSubscriptions, refused: tooMany })
  // [MQTT-3.8.4-1] SUBACK with the same packet identifier, one code per filter [MQTT-3.8.4-6]
  broker.saveSession(s)
  // SUBACK once the subscriptions are durable; retained messages follow it
  broker.afterCommit((r) => {
    if (r !== 'ok') {
      // the store could not take the change (full): the subscriptions are not made, and the
      // client is told so (v5 0x97 Quota exceeded, v3 0x80) instead of a SUBACK that would lie
      for (const i of added) {
        broker.removeSubscription(s, p.subscriptions[i]!.topic)
        granted[i] = conn.v5 ? RC.QUOTA_EXCEEDED : 0x80
      }
      retainedFor.length = 0
    }
    conn.sendPacket({ cmd: 'suback', messageId: p.messageId, granted } as Packet)
    if (retainedFor.length > 0 && conn.state === 'connected') sendRetained(conn, retainedFor)
  })
}

/** MQTT 3.x SUBSCRIBE / UNSUBSCRIBE: throws (the connection closes) for an invalid filter. */
export function rejectV3Filter(filter: string, allowControl: boolean): void {
  const bad = filterSyntaxError(filter, allowControl)
  if (bad !== null) throw new MqttError(RC.PROTOCOL_ERROR, `invalid topic filter ${JSON.stringify(filter)}: ${bad}`)
}

/** [MQTT-3.3.1-8] retained messages go out with RETAIN set, at min(message, granted) QoS. */
function sendRetained(conn: Connection, subs: Subscription[]): void {
  const broker = conn.broker
  const s = conn.session!
  const now = Date.now()
  const found = new Map<string, Message>()
  const add = (msg: Message) => { found.set(msg.topic, msg) }
  for (const sub of subs) {
    broker.store.matchRetained(sub.filter, add)
    if (sub.filter.startsWith('$SYS')) broker.sysRetained.match(sub.filter, add)
  }
  for (const msg of found.values()) {
    if (msg.expiresAt > 0 && msg.expiresAt <= now) { broker.store.deleteRetained(msg.topic); continue }
    let best: Subscription | null = null
    const ids: number[] = []
    for (const sub of subs) {
      if (!filterMatches(sub.filter, msg.topic)) continue
      if (best === null || sub.qos > best.qos) best = sub
      if (sub.subId > 0) ids.push(sub.subId)
    }
    if (best === null) continue
    // granted filters may match topics the client may not read: those retained messages stay
    if (!mayRead(broker, s, msg.topic)) continue
    const qos = (msg.qos < best.qos ? msg.qos : best.qos) as QoS
    broker.deliverTo(s, { msg, qos, retain: true, subIds: ids.length > 0 ? ids : null })
  }
}

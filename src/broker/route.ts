import type { QoS } from 'mqtt-packet'
import type { Message } from '../codec/message.ts'
import type { Delivery, Subscription } from '../session/types.ts'
import type { Broker } from './broker.ts'
import { sendQos0 } from './deliver.ts'
import { membersWithRoom, roomForAll } from './queue.ts'

const MATCH_CACHE_MAX = 10_000

function matches(broker: Broker, topic: string): Subscription[] {
  let list = broker.matchCache.get(topic)
  if (list === undefined) {
    list = []
    const out = list
    broker.subs.match(topic, (sub) => { out.push(sub) })
    if (broker.matchCache.size >= MATCH_CACHE_MAX) broker.matchCache.clear()
    broker.matchCache.set(topic, list)
  }
  return list
}

/**
 * Delivers a message to every matching session. Overlapping subscriptions of one session
 * give one delivery with the highest QoS and every Subscription Identifier [MQTT-3.3.4-2]
 * [MQTT-3.3.4-3]; each shared group gives one delivery to one member [MQTT-4.8.2-2].
 */
export function route(broker: Broker, msg: Message, refuseFull = false): number {
  const list = matches(broker, msg.topic)
  if (list.length === 0) return 0
  // session.queueOverflow=refuse: to every matching session or to none (queue.ts)
  if (refuseFull && !roomForAll(broker.sessions, list, msg)) return -1
  let single: Subscription | null = null
  let many: Map<string, Delivery> | null = null
  let groups: Map<string, Subscription[]> | null = null
  for (const sub of list) {
    if (sub.group !== null) {
      groups ??= new Map()
      const key = `${sub.group}\u0000${sub.filter}`
      const members = groups.get(key)
      if (members === undefined) groups.set(key, [sub])
      else members.push(sub)
      continue
    }
    // [MQTT-3.8.3-3] No Local: not back to the publisher
    if (sub.noLocal && sub.clientId === msg.origin) continue
    if (single === null && many === null) { single = sub; continue }
    many ??= new Map()
    if (single !== null) { many.set(single.clientId, toDelivery(msg, single)); single = null }
    const prev = many.get(sub.clientId)
    if (prev === undefined) many.set(sub.clientId, toDelivery(msg, sub))
    else merge(prev, msg, sub)
  }
  let count = 0
  if (single !== null) count += sendOne(broker, msg, single)
  if (many !== null) for (const [clientId, d] of many) count += send(broker, clientId, d)
  if (groups !== null) for (const [key, members] of groups) count += sendShared(broker, key, members, msg)
  return count
}

function toDelivery(msg: Message, sub: Subscription): Delivery {
  // [MQTT-3.3.1-9] [MQTT-3.3.1-12] retain flag only kept with Retain As Published
  return {
    msg,
    qos: (msg.qos < sub.qos ? msg.qos : sub.qos) as QoS,
    retain: sub.retainAsPublished && msg.retain,
    subIds: sub.subId > 0 ? [sub.subId] : null,
  }
}

function merge(d: Delivery, msg: Message, sub: Subscription): void {
  const q = (msg.qos < sub.qos ? msg.qos : sub.qos) as QoS
  if (q > d.qos) d.qos = q
  if (sub.retainAsPublished && msg.retain) d.retain = true
  if (sub.subId > 0) (d.subIds ??= []).push(sub.subId)
}

/** One subscription: a QoS 0 message to a connected client is written without a Delivery. */
function sendOne(broker: Broker, msg: Message, sub: Subscription): number {
  const s = broker.sessions.get(sub.clientId)
  if (s === undefined) return 0
  const conn = s.connection
  if (conn !== null && (msg.qos === 0 || sub.qos === 0) && sub.subId === 0) {
    // [MQTT-3.3.1-9] [MQTT-3.3.1-12] retain flag only kept with Retain As Published
    sendQos0(conn, msg, sub.retainAsPublished && msg.retain, null)
    return 1
  }
  broker.deliverTo(s, toDelivery(msg, sub))
  return 1
}

function send(broker: Broker, clientId: string, d: Delivery): number {
  const s = broker.sessions.get(clientId)
  if (s === undefined) return 0
  broker.deliverTo(s, d)
  return 1
}

/** Picks one member of a shared group, preferring connected ones; round robin or random. */
function sendShared(broker: Broker, key: string, members: Subscription[], msg: Message): number {
  if (broker.refuseFull && msg.qos > 0) members = membersWithRoom(broker.sessions, members, msg)
  const online = members.filter((m) => broker.isOnline(m.clientId))
  const pool = online.length > 0 ? online : members
  let i: number
  if (broker.config.shared.strategy === 'random') i = Math.floor(Math.random() * pool.length)
  else {
    i = (broker.sharedCursor.get(key) ?? 0) % pool.length
    broker.sharedCursor.set(key, i + 1)
  }
  const sub = pool[i]!
  return send(broker, sub.clientId, toDelivery(msg, sub))
}

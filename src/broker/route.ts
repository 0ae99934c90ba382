import type { QoS } from 'mqtt-packet'
import type { Message } from '../codec/message.ts'
import type { Delivery, Subscription } from '../session/types.ts'
import type { Broker } from './broker.ts'
import { sendQos0 } from './deliver.ts'
import { readableFlags } from './read-access.ts'
import { membersWithRoom, roomForAll } from './queue.ts'

const MATCH_CACHE_MAX = 10_000

/** A topic's matching subscriptions and, once an ACL is in use, which of them may read it. */
export interface Match {
  subs: Subscription[]
  /** Per subscription: 1 when its client may read the topic (readableFlags); null without read checks. */
  readable: Uint8Array | null
}

function matches(broker: Broker, topic: string): Match {
  let m = broker.matchCache.get(topic)
  if (m === undefined) {
    const out: Subscription[] = []
    broker.subs.match(topic, (sub) => { out.push(sub) })
    if (broker.matchCache.size >= MATCH_CACHE_MAX) broker.matchCache.clear()
    m = { subs: out, readable: null }
    broker.matchCache.set(topic, m)
  }
  // read decisions per subscription and topic, made once: the cache is cleared when
  // subscriptions, a session's reader or the ACL change
  if (m.readable === null && broker.readChecks && m.subs.length > 0) m.readable = readableFlags(broker, topic, m.subs)
  return m
}

/**
 * Delivers a message to every matching session. Overlapping subscriptions of one session
 * give one delivery with the highest QoS and every Subscription Identifier [MQTT-3.3.4-2]
 * [MQTT-3.3.4-3]; each shared group gives one delivery to one member [MQTT-4.8.2-2].
 */
export function route(broker: Broker, msg: Message, refuseFull = false): number {
  const m = matches(broker, msg.topic)
  const list = m.subs
  if (list.length === 0) return 0
  const readable = m.readable
  // session.queueOverflow=refuse: to every matching session that may read it, or to none (queue.ts)
  if (refuseFull && !roomForAll(broker.sessions, list, readable, msg)) return -1
  let single: Subscription | null = null
  let many: Map<string, Delivery> | null = null
  let groups: Map<string, Subscription[]> | null = null
  for (let i = 0; i < list.length; i++) {
    const sub = list[i]!
    // an ACL: the message goes only to clients that may read its topic; a shared group
    // gives it to a member that may, or skips it
    if (readable !== null && readable[i] === 0) continue
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

import type { QoS } from 'mqtt-packet'
import type { Message, MessageProps } from '../../codec/message.ts'
import type { Subscription, Will } from '../../session/types.ts'

/** Row encodings for the SQLite store: message properties and wills as JSON. */

interface PropsJson { pfi?: number; ct?: string; rt?: string; cd?: string; up?: string }

export function propsToJson(p: MessageProps | null): string | null {
  if (p === null) return null
  const j: PropsJson = {}
  if (p.payloadFormatIndicator !== undefined) j.pfi = p.payloadFormatIndicator
  if (p.contentType !== undefined) j.ct = p.contentType
  if (p.responseTopic !== undefined) j.rt = p.responseTopic
  if (p.correlationData !== undefined) j.cd = p.correlationData.toString('base64')
  if (p.userProps !== undefined) j.up = p.userProps.toString('base64')
  return JSON.stringify(j)
}

export function propsFromJson(s: string | null): MessageProps | null {
  if (s === null) return null
  const j = JSON.parse(s) as PropsJson
  const p: MessageProps = {}
  if (j.pfi !== undefined) p.payloadFormatIndicator = j.pfi
  if (j.ct !== undefined) p.contentType = j.ct
  if (j.rt !== undefined) p.responseTopic = j.rt
  if (j.cd !== undefined) p.correlationData = Buffer.from(j.cd, 'base64')
  if (j.up !== undefined) p.userProps = Buffer.from(j.up, 'base64')
  return p
}

export interface MessageRow {
  topic: string
  payload: Uint8Array
  qos: number
  retain: number
  props: string | null
  expires_at: number
  origin: string
}

export function messageFromRow(r: MessageRow): Message {
  return {
    topic: r.topic, payload: Buffer.from(r.payload), qos: r.qos as QoS, retain: r.retain === 1,
    props: propsFromJson(r.props), expiresAt: r.expires_at, origin: r.origin,
  }
}

interface WillJson {
  topic: string; payload: string; qos: number; retain: boolean; props: string | null; origin: string
  delay: number; expiry: number; at: number
}

export function willToJson(w: Will | null, at: number): string | null {
  if (w === null) return null
  const m = w.msg
  const j: WillJson = {
    topic: m.topic, payload: m.payload.toString('base64'), qos: m.qos, retain: m.retain,
    props: propsToJson(m.props), origin: m.origin, delay: w.delay, expiry: w.expiry, at,
  }
  return JSON.stringify(j)
}

export function willFromJson(s: string | null): { will: Will; at: number } | null {
  if (s === null) return null
  const j = JSON.parse(s) as WillJson
  const msg: Message = {
    topic: j.topic, payload: Buffer.from(j.payload, 'base64'), qos: j.qos as QoS, retain: j.retain,
    props: propsFromJson(j.props), expiresAt: 0, origin: j.origin,
  }
  return { will: { msg, delay: j.delay, expiry: j.expiry }, at: j.at }
}

export function subsToJson(subs: Subscription[]): string {
  // `read` is the broker's cache of read decisions (read-access.ts), not part of the subscription
  return JSON.stringify(subs, (k, v) => (k === 'read' ? undefined : v))
}

export function subsFromJson(s: string): Subscription[] {
  return JSON.parse(s) as Subscription[]
}

/**
 * Clients for queue-limit tests (test/integration/32-queue-limits.test.ts): a persistent
 * subscriber that goes away and comes back, a publisher that reports what its PUBLISH got,
 * a reader that acknowledges what arrives, and a logger that keeps the broker's warn lines.
 */
import type { IPublishPacket } from 'mqtt-packet'
import type { Logger } from '../../src/log.ts'
import { openAccepted, persistentConnect } from './open.ts'
import * as b from './packet-builder.ts'
import type { RawClient } from './raw-client.ts'

type V = 4 | 5

/** Connects a persistent session, subscribes to filter (QoS 1, or as given) and leaves with DISCONNECT. */
export async function subscribeAndLeave(port: number, v: V, clientId: string, filter: string, qos = 1): Promise<void> {
  const { c } = await openAccepted(port, persistentConnect(v, clientId))
  c.send(b.subscribe(1, [{ topic: filter, qos }], { version: v }))
  await c.nextOf('suback')
  c.send(b.disconnect({ version: v }))
  await c.closed()
}

/**
 * Publishes once and waits for the answer: the reason code of the PUBACK / PUBREC (0 for v3 and
 * for v5 success; a QoS 2 flow is completed with PUBREL), or 'closed' when the server closed the
 * connection without acknowledging.
 */
export async function publishOnce(c: RawClient, v: V, topic: string, payload: string | Uint8Array, qos: 1 | 2, id: number): Promise<number | 'closed'> {
  c.send(b.publish({ topic, payload, qos, packetId: id, version: v }))
  let ack
  try {
    ack = await c.nextOf(qos === 1 ? 'puback' : 'pubrec')
  } catch (e) {
    if (c.isClosed) return 'closed'
    throw e
  }
  if ((ack as { messageId?: number }).messageId !== id) throw new Error(`ack for ${(ack as { messageId?: number }).messageId}, expected ${id}`)
  const rc = (ack as { reasonCode?: number }).reasonCode ?? 0
  if (qos === 2 && rc < 0x80) {
    c.send(b.pubrel(id, { version: v }))
    await c.nextOf('pubcomp')
  }
  return rc
}

/** Reads n PUBLISH packets, acknowledging each (QoS 2 flows completed); returns them in order. */
export async function receiveAcked(c: RawClient, v: V, n: number, timeoutMs = 5000): Promise<IPublishPacket[]> {
  const out: IPublishPacket[] = []
  const open = new Set<number>()
  while (out.length < n || open.size > 0) {
    const p = await c.next(timeoutMs)
    if (p.cmd === 'pubrel') { open.delete(p.messageId!); c.send(b.pubcomp(p.messageId!, { version: v })); continue }
    if (p.cmd !== 'publish') throw new Error(`expected PUBLISH, got ${p.cmd}`)
    out.push(p)
    if (p.qos === 1) c.send(b.puback(p.messageId!, { version: v }))
    if (p.qos === 2) { open.add(p.messageId!); c.send(b.pubrec(p.messageId!, { version: v })) }
  }
  return out
}

export const payloadsOf = (ps: IPublishPacket[]): string[] => ps.map((p) => p.payload.toString())

/** A logger that keeps warn lines (message and fields) and drops everything else. */
export function warnCapture(): { log: Logger; warns: { msg: string; fields: Record<string, unknown> }[] } {
  const warns: { msg: string; fields: Record<string, unknown> }[] = []
  const log: Logger = {
    debug() {}, info() {}, error() {},
    warn(msg, fields) { warns.push({ msg, fields: fields ?? {} }) },
    enabled: (level) => level === 'warn',
  }
  return { log, warns }
}

import type { IUnsubscribePacket, Packet } from 'mqtt-packet'
import { MqttError, RC } from '../../codec/reason-codes.ts'
import { filterSyntaxError, parseShared } from '../../topic/validate.ts'
import type { Connection } from '../connection.ts'
import { rejectV3Filter } from './subscribe.ts'

/** UNSUBSCRIBE: remove each filter; v5 UNSUBACK says per filter whether it existed. */
export function handleUnsubscribe(conn: Connection, packet: Packet): void {
  const p = packet as IUnsubscribePacket
  const s = conn.session!
  if (!p.messageId) throw new MqttError(RC.MALFORMED_PACKET, 'UNSUBSCRIBE with packet identifier 0')
  // [MQTT-3.10.3-2] at least one topic filter
  if (p.unsubscriptions.length === 0) throw new MqttError(RC.PROTOCOL_ERROR, 'UNSUBSCRIBE with no topic filters')
  const codes: number[] = []
  const allowControl = conn.broker.config.limits.allowControlCharacters
  // 3.1.1: an invalid filter closes the connection before anything is removed [MQTT-4.8.0-1]
  if (!conn.v5) for (const raw of p.unsubscriptions) rejectV3Filter(raw, allowControl)
  for (const raw of p.unsubscriptions) {
    // v5 answers 0x8F for an invalid filter
    if (conn.v5) {
      const parsed = parseShared(raw)
      if (typeof parsed === 'string' || filterSyntaxError(parsed.filter, allowControl) !== null) { codes.push(RC.TOPIC_FILTER_INVALID); continue }
    }
    const removed = conn.broker.removeSubscription(s, raw)
    codes.push(removed ? RC.SUCCESS : RC.NO_SUBSCRIPTION_EXISTED)
  }
  conn.broker.saveSession(s)
  // [MQTT-3.10.4-4] UNSUBACK with the same packet identifier, once the change is durable
  conn.broker.afterCommit((r) => {
    // not durable (store full): v5 says so per removed filter (0x80); the removal may come back after a restart
    if (r !== 'ok') for (let i = 0; i < codes.length; i++) if (codes[i] === RC.SUCCESS) codes[i] = RC.UNSPECIFIED_ERROR
    if (conn.v5) conn.sendPacket({ cmd: 'unsuback', messageId: p.messageId, granted: codes } as Packet)
    else conn.sendPacket({ cmd: 'unsuback', messageId: p.messageId } as unknown as Packet)
  })
}

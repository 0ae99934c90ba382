import type { IDisconnectPacket, Packet } from 'mqtt-packet'
import { MqttError, RC } from '../../codec/reason-codes.ts'
import type { Connection } from '../connection.ts'

/** DISCONNECT from the client: a normal one discards the will [MQTT-3.14.4-3], 0x04 keeps it. */
export function handleDisconnect(conn: Connection, packet: Packet): void {
  const p = packet as IDisconnectPacket
  const reason = p.reasonCode ?? 0
  const s = conn.session
  const expiry = p.properties?.sessionExpiryInterval
  if (expiry !== undefined && s !== null) {
    // [MQTT-3.14.2-2] a session expiry of 0 in CONNECT cannot become non-zero at DISCONNECT
    if (s.expiryInterval === 0 && expiry !== 0) {
      throw new MqttError(RC.PROTOCOL_ERROR, 'session expiry interval changed from 0 at DISCONNECT')
    }
    s.expiryInterval = Math.min(expiry, conn.broker.config.limits.maxSessionExpiry)
  }
  conn.cleanDisconnect = reason !== RC.DISCONNECT_WITH_WILL
  conn.end()
}

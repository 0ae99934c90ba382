import { decodeAck, encodeAck, PUBACK, PUBCOMP, PUBREC, PUBREL, type InAck } from '../../codec/acks.ts'
import { MqttError, RC } from '../../codec/reason-codes.ts'
import type { Connection } from '../connection.ts'
import { drainQueue } from '../deliver.ts'
import { persist, unpersist } from '../queue.ts'

const scratch: InAck = { type: 0, packetId: 0, reason: 0 }

/** PUBACK, PUBREC, PUBREL and PUBCOMP from the client. */
export function handleAck(conn: Connection, header: number, buf: Buffer, start: number, end: number): void {
  // one decode target for every ack: read before anything below can run another ack
  const ack = decodeAck(header, buf, conn.v5, start, end, scratch, conn.broker.config.limits.maxUserProperties)
  const packetId = ack.packetId
  const type = ack.type
  const reason = ack.reason
  const s = conn.session!
  switch (type) {
    case PUBACK: case PUBCOMP: {
      const f = s.inflight.get(packetId)
      if (f === undefined) return
      // [MQTT-4.3.3-?] PUBCOMP completes a QoS 2 flow only after PUBREL; PUBACK only for QoS 1
      if (type === PUBACK ? f.delivery.qos !== 1 : f.state !== 'pubrel') {
        throw new MqttError(RC.PROTOCOL_ERROR, `${type === PUBACK ? 'PUBACK' : 'PUBCOMP'} for packet ${packetId} in the wrong state`)
      }
      s.inflight.delete(packetId)
      unpersist(s, f.delivery)
      drainQueue(conn, s)
      return
    }
    case PUBREC: {
      const f = s.inflight.get(packetId)
      if (f === undefined) {
        // [MQTT-4.3.3-?] unknown id: answer PUBREL with 0x92 (v5)
        conn.send(encodeAck(PUBREL, packetId, RC.PACKET_IDENTIFIER_NOT_FOUND, conn.v5))
        return
      }
      if (f.delivery.qos !== 2) throw new MqttError(RC.PROTOCOL_ERROR, `PUBREC for QoS 1 packet ${packetId}`)
      if (reason >= 0x80) {
        // v5: a failed PUBREC ends the flow [MQTT-4.3.3-?]
        s.inflight.delete(packetId)
        unpersist(s, f.delivery)
        drainQueue(conn, s)
        return
      }
      // [MQTT-4.3.3-3] answer PUBREC with PUBREL
      f.state = 'pubrel'
      persist(s, f.delivery, f.packetId, 'pubrel')
      conn.send(encodeAck(PUBREL, packetId, 0, conn.v5))
      return
    }
    case PUBREL: {
      // [MQTT-4.3.3-11] answer PUBREL with PUBCOMP; the id may be reused afterwards
      const known = s.deleteQos2(packetId)
      if (known && s.store !== null) s.store.removeInboundQos2(s.clientId, packetId)
      const v5 = conn.v5
      // the forgotten id must be durable before PUBCOMP, or a restart would drop its next use
      conn.broker.afterCommit((r) => {
        if (r === 'failed') return conn.disconnect(RC.UNSPECIFIED_ERROR, 'storage unavailable')
        if (known && conn.unackedIn > 0) conn.unackedIn--
        conn.send(encodeAck(PUBCOMP, packetId, known ? 0 : RC.PACKET_IDENTIFIER_NOT_FOUND, v5))
      })
    }
  }
}

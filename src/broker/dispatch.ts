import type { IConnectPacket } from 'mqtt-packet'
import { decodePacket, peekConnect } from '../codec/packets.ts'
import { MqttError, RC } from '../codec/reason-codes.ts'
import type { Connection } from './connection.ts'
import { handleAck } from './handlers/ack.ts'
import { handleAuth } from './handlers/auth.ts'
import { handleConnect, rejectProtocol } from './handlers/connect.ts'
import { handleDisconnect } from './handlers/disconnect.ts'
import { handlePingreq } from './handlers/pingreq.ts'
import { handlePublish } from './handlers/publish.ts'
import { handleSubscribe } from './handlers/subscribe.ts'
import { handleUnsubscribe } from './handlers/unsubscribe.ts'

const CONNECT = 1, PUBLISH = 3, PUBACK = 4, PUBCOMP = 7, SUBSCRIBE = 8, UNSUBSCRIBE = 10
const PINGREQ = 12, DISCONNECT = 14, AUTH = 15

/** Routes one whole packet to its handler. Throws MqttError on protocol violations. */
export function dispatch(conn: Connection, header: number, buf: Buffer, start: number, end: number, owned = false): void | Promise<void> {
  const type = header >> 4
  // the hot path: a PUBLISH on an open connection needs no view of its body
  // the hot paths: PUBLISH and acks on an open connection need no view of their body
  if (conn.state === 'connected') {
    if (type === PUBLISH) return handlePublish(conn, header, buf, start, end, owned)
    if (type >= PUBACK && type <= PUBCOMP) return handleAck(conn, header, buf, start, end)
  }
  const body = buf.subarray(start, end)
  if (conn.state === 'new') {
    // [MQTT-3.1.0-1] the first packet from the client must be CONNECT
    if (type !== CONNECT) throw new MqttError(RC.PROTOCOL_ERROR, 'first packet is not CONNECT')
    const peek = peekConnect(body)
    if (peek === null) throw new MqttError(RC.MALFORMED_PACKET, 'CONNECT too short')
    const ok = (peek.protocolName === 'MQTT' && (peek.level === 4 || peek.level === 5)) ||
      (peek.protocolName === 'MQIsdp' && peek.level === 3)
    if (!ok) return rejectProtocol(conn, peek)
    conn.version = peek.level as 3 | 4 | 5
    const packet = decodeOrConnack(conn, header, body)
    // above the memory budget new connections are refused (CONNACK 0x89 / 3), before any work
    if (packet !== null && conn.broker.memory.refuse(conn, packet as IConnectPacket)) return
    return handleConnect(conn, packet)
  }
  if (type === CONNECT) {
    // [MQTT-3.1.0-2] a second CONNECT is a protocol violation
    throw new MqttError(RC.PROTOCOL_ERROR, 'second CONNECT on a connection')
  }
  if (conn.state === 'authenticating') {
    if (type === AUTH) return handleAuth(conn, decodePacket(header, body, conn.version, conn.broker.config.limits))
    if (type === DISCONNECT) return handleDisconnect(conn, decodePacket(header, body, conn.version, conn.broker.config.limits))
    throw new MqttError(RC.PROTOCOL_ERROR, 'packet other than AUTH during authentication')
  }
  switch (type) {
    case PUBLISH: return handlePublish(conn, header, buf, start, end, owned)
    case PUBACK: case PUBACK + 1: case PUBACK + 2: case PUBCOMP: return handleAck(conn, header, buf, start, end)
    case SUBSCRIBE: return handleSubscribe(conn, decodePacket(header, body, conn.version, conn.broker.config.limits))
    case UNSUBSCRIBE: return handleUnsubscribe(conn, decodePacket(header, body, conn.version, conn.broker.config.limits))
    case PINGREQ:
      if ((header & 0x0f) !== 0 || body.length !== 0) throw new MqttError(RC.MALFORMED_PACKET, 'malformed PINGREQ')
      return handlePingreq(conn)
    case DISCONNECT: return handleDisconnect(conn, decodePacket(header, body, conn.version, conn.broker.config.limits))
    case AUTH:
      if (!conn.v5) throw new MqttError(RC.PROTOCOL_ERROR, 'AUTH is an MQTT 5 packet')
      return handleAuth(conn, decodePacket(header, body, conn.version, conn.broker.config.limits))
    default:
      // CONNACK, SUBACK, UNSUBACK, PINGRESP and reserved types never come from a client
      throw new MqttError(RC.PROTOCOL_ERROR, `unexpected packet type ${type} from a client`)
  }
}

/** A malformed CONNECT from a v5 client gets CONNACK 0x81 before the close [MQTT-4.13.1-1]. */
function decodeOrConnack(conn: Connection, header: number, body: Buffer) {
  try {
    return decodePacket(header, body, conn.version, conn.broker.config.limits)
  } catch (e) {
    if (e instanceof MqttError && conn.v5) {
      conn.sendPacket({ cmd: 'connack', sessionPresent: false, reasonCode: e.code, properties: { reasonString: e.message } })
      conn.broker.log.warn('malformed CONNECT', { remote: conn.socket.remoteAddress, error: e.message })
      conn.end()
      return null
    }
    throw e
  }
}

import type { Connection } from '../connection.ts'

const PINGRESP = Buffer.from([0xd0, 0x00])

/** [MQTT-3.12.4-1] the server answers PINGREQ with PINGRESP. */
export function handlePingreq(conn: Connection): void {
  conn.send(PINGRESP)
}

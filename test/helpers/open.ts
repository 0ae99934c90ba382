import type { IConnackPacket } from 'mqtt-packet'
import type { ConnectOpts } from './packet-builder.ts'
import { RawClient } from './raw-client.ts'

/** Connects a raw client with a CONNECT built from o; rejects unless the CONNACK accepts it. */
export async function openAccepted(port: number, o: ConnectOpts): Promise<{ c: RawClient; ack: IConnackPacket }> {
  const { client, connack } = await RawClient.open(port, o)
  const ack = connack as IConnackPacket
  const code = o.version === 5 ? ack.reasonCode : ack.returnCode
  if (code !== 0) {
    await client.close()
    throw new Error(`CONNECT of ${o.clientId ?? '(no id)'} refused with 0x${code?.toString(16)}`)
  }
  return { c: client, ack }
}

/** CONNECT options for a session that outlives the connection (v5: expiry 60 s). */
export const persistentConnect = (version: 4 | 5, clientId: string): ConnectOpts =>
  ({ version, clientId, clean: false, ...(version === 5 ? { properties: { sessionExpiry: 60 } } : {}) })

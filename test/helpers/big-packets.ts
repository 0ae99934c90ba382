/**
 * Very large packets for resource-limit tests (millions of properties or filters), built with
 * Buffer operations: packet-builder.ts spreads arrays, which does not scale to megabytes.
 * Independent of src/ like packet-builder.ts.
 */
import { str, varint } from './packet-builder.ts'

/** `n` User Property (0x26) entries with names and values of `size` bytes, as raw property bytes. */
export function userProps(n: number, size = 0): Buffer {
  const one = Buffer.concat([Buffer.from([0x26, size >> 8, size & 0xff]), Buffer.alloc(size, 0x6e), Buffer.from([size >> 8, size & 0xff]), Buffer.alloc(size, 0x76)])
  const all = Buffer.allocUnsafe(one.length * n)
  for (let i = 0; i < n; i++) one.copy(all, i * one.length)
  return all
}

const packet = (first: number, body: Buffer) => Buffer.concat([Buffer.from([first, ...varint(body.length)]), body])
const propBlock = (props: Buffer) => Buffer.concat([Buffer.from(varint(props.length)), props])

/** A v5 CONNECT (clean start, keepalive 60) whose properties are `props`. */
export function connectWithProps(props: Buffer, clientId: string, username?: string, password?: string): Buffer {
  const flags = 0x02 | (username !== undefined ? 0x80 : 0) | (password !== undefined ? 0x40 : 0)
  const tail = [...str(clientId), ...(username !== undefined ? str(username) : []), ...(password !== undefined ? str(password) : [])]
  return packet(0x10, Buffer.concat([Buffer.from([...str('MQTT'), 5, flags, 0, 60]), propBlock(props), Buffer.from(tail)]))
}

/** A v5 QoS 0 PUBLISH to `topic` whose properties are `props`. */
export function publishWithProps(topic: string, props: Buffer, payload = Buffer.alloc(0)): Buffer {
  return packet(0x30, Buffer.concat([Buffer.from(str(topic)), propBlock(props), payload]))
}

/** A v5 SUBSCRIBE whose properties are `props`, with one filter. */
export function subscribeWithProps(packetId: number, props: Buffer, filter = 'a'): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([packetId >> 8, packetId & 0xff]), propBlock(props), Buffer.from([...str(filter), 0])]))
}

/** A SUBSCRIBE (v5 with an empty property block, else v3.1.1) with `n` one-byte filters. */
export function subscribeMany(packetId: number, n: number, v5: boolean): Buffer {
  const one = Buffer.from([0, 1, 0x66, 0])
  const filters = Buffer.allocUnsafe(4 * n)
  for (let i = 0; i < n; i++) one.copy(filters, 4 * i)
  return packet(0x82, Buffer.concat([Buffer.from([packetId >> 8, packetId & 0xff, ...(v5 ? [0] : [])]), filters]))
}

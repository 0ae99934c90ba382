import { MqttError, RC } from './reason-codes.ts'
import { readVarint } from './varint.ts'

/**
 * Caps on the number of entries in one packet. Decoding costs time per entry (mqtt-packet
 * takes ~0.4 µs per user property and ~1.7 µs per topic filter): without a cap one 16 MiB
 * packet with 3 million user properties or 4 million filters blocks the event loop for
 * seconds. The checks here run before the decode and stop at the cap, so they cost at most
 * `cap` steps.
 */
export interface EntryLimits {
  /** User Properties (0x26) in one packet (CONNECT: its own and its will's together). */
  readonly maxUserProperties: number
  /** Topic filters in one SUBSCRIBE or UNSUBSCRIBE. */
  readonly maxTopicFiltersPerPacket: number
}

export const tooManyUserProperties = (max: number) =>
  new MqttError(RC.QUOTA_EXCEEDED, `more than ${max} user properties in one packet (limits.maxUserProperties)`)

/** Size of a property's value by identifier (spec 2.2.2.2): bytes, or S (string/binary), P (string pair), V (varint). */
const S = -1, P = -2, V = -3
const SIZE: Record<number, number> = {
  0x01: 1, 0x02: 4, 0x03: S, 0x08: S, 0x09: S, 0x0b: V, 0x11: 4, 0x12: S, 0x13: 2, 0x15: S, 0x16: S,
  0x17: 1, 0x18: 4, 0x19: 1, 0x1a: S, 0x1c: S, 0x1f: S, 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1,
  0x26: P, 0x27: 4, 0x28: 1, 0x29: 1, 0x2a: 1,
}

const u16 = (b: Buffer, at: number) => (b[at]! << 8) | b[at + 1]!

/**
 * Walks the property block at `pos` (its length first), counting user properties on top of
 * `users`; throws when they pass `max` or another property repeats. Returns [position after
 * the block, user properties so far], or null when the block is not well-formed (the decoder
 * reports that).
 */
function walkProps(body: Buffer, pos: number, users: number, max: number): [number, number] | null {
  const vi = readVarint(body, pos, body.length)
  if (vi === null) return null
  const end = vi[1] + vi[0]
  if (end > body.length) return null
  let lo = 0, hi = 0
  pos = vi[1]
  while (pos < end) {
    const id = body[pos++]!
    const size = SIZE[id]
    if (size === undefined) return null
    if (size === P) {
      if (++users > max) throw tooManyUserProperties(max)
      if (pos + 2 > end) return null
      pos += 2 + u16(body, pos)
      if (pos + 2 > end) return null
      pos += 2 + u16(body, pos)
      continue
    }
    // [MQTT-2.2.2-2] only User Property may appear more than once (checked here so that a block
    // of millions of repeated properties is not decoded first)
    const bit = 1 << (id & 31)
    if (id < 32 ? (lo & bit) !== 0 : (hi & bit) !== 0) throw new MqttError(RC.PROTOCOL_ERROR, `property 0x${id.toString(16)} included more than once`)
    if (id < 32) lo |= bit
    else hi |= bit
    if (size === S) {
      if (pos + 2 > end) return null
      pos += 2 + u16(body, pos)
    } else if (size === V) {
      const v = readVarint(body, pos, end)
      if (v === null) return null
      pos = v[1]
    } else pos += size
  }
  return pos === end ? [end, users] : null
}

/**
 * Throws (v5 0x97 Quota exceeded) when a CONNECT, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT or AUTH
 * body holds more user properties or topic filters than `lim` allows. Does nothing for packets
 * that are malformed in a way the decoder reports.
 */
export function checkEntryLimits(header: number, body: Buffer, v5: boolean, lim: EntryLimits): void {
  const type = header >> 4
  const max = lim.maxUserProperties
  if (type === 1) {
    if (!v5 || body.length < 2) return
    let pos = 2 + u16(body, 0)
    if (pos + 4 > body.length) return
    const flags = body[pos + 1]!
    const a = walkProps(body, pos + 4, 0, max)
    if (a === null || (flags & 0x04) === 0) return
    pos = a[0]
    if (pos + 2 > body.length) return
    walkProps(body, pos + 2 + u16(body, pos), a[1], max)
  } else if (type === 8 || type === 10) {
    let pos = 2
    if (v5) {
      const a = walkProps(body, pos, 0, max)
      if (a === null) return
      pos = a[0]
    }
    const filters = lim.maxTopicFiltersPerPacket
    const option = type === 8 ? 1 : 0
    let n = 0
    while (pos + 2 <= body.length) {
      if (++n > filters) {
        throw new MqttError(RC.QUOTA_EXCEEDED, `more than ${filters} topic filters in one ${type === 8 ? 'SUBSCRIBE' : 'UNSUBSCRIBE'} (limits.maxTopicFiltersPerPacket)`)
      }
      pos += 2 + u16(body, pos) + option
    }
  } else if ((type === 14 || type === 15) && v5 && body.length > 1) {
    walkProps(body, 1, 0, max)
  }
}

import type { UserProperties } from 'mqtt-packet'

/** Encodes user properties (mqtt-packet's object form) as raw 0x26 property entries. */
export function encodeUserProps(props: UserProperties | undefined): Buffer | undefined {
  if (props === undefined) return undefined
  const parts: Buffer[] = []
  for (const [name, value] of Object.entries(props)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      const n = Buffer.from(name)
      const val = Buffer.from(String(v))
      const b = Buffer.allocUnsafe(5 + n.length + val.length)
      b[0] = 0x26
      b.writeUInt16BE(n.length, 1)
      n.copy(b, 3)
      b.writeUInt16BE(val.length, 3 + n.length)
      val.copy(b, 5 + n.length)
      parts.push(b)
    }
  }
  return parts.length > 0 ? Buffer.concat(parts) : undefined
}

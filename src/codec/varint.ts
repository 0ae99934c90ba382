/** Variable Byte Integer helpers (spec 1.5.5). */
export function varintSize(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4
}

export function writeVarint(buf: Buffer, pos: number, n: number): number {
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    buf[pos++] = b
  } while (n > 0)
  return pos
}

/** Reads a varint at pos; returns [value, nextPos] or null when malformed or truncated. */
export function readVarint(buf: Buffer, pos: number, end: number): [number, number] | null {
  let value = 0
  let mult = 1
  for (let n = 0; n < 4; n++) {
    if (pos >= end) return null
    const b = buf[pos++]!
    value += (b & 0x7f) * mult
    if ((b & 0x80) === 0) return [value, pos]
    mult *= 128
  }
  return null
}

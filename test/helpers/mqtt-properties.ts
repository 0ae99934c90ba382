/**
 * Independent MQTT 5 property encoder, written from the spec (section 2.2.2.2 and the
 * property table 2-4). It imports nothing from src/ so that it can serve as an oracle.
 *
 * Properties are written in the insertion order of the object's keys, so a test controls the
 * exact byte order. `userProperties` writes one 0x26 entry per pair, in array order;
 * `subscriptionIdentifier` accepts an array to write several 0x0B entries. `raw` appends
 * arbitrary bytes inside the property block (for duplicate or unknown property tests).
 */

export interface Props {
  payloadFormat?: number // 0x01 byte
  messageExpiry?: number // 0x02 four byte integer
  contentType?: string // 0x03 utf-8 string
  responseTopic?: string // 0x08 utf-8 string
  correlationData?: Uint8Array | string // 0x09 binary data
  subscriptionIdentifier?: number | number[] // 0x0B variable byte integer
  sessionExpiry?: number // 0x11 four byte integer
  assignedClientId?: string // 0x12 utf-8 string
  serverKeepAlive?: number // 0x13 two byte integer
  authMethod?: string // 0x15 utf-8 string
  authData?: Uint8Array | string // 0x16 binary data
  requestProblemInfo?: number // 0x17 byte
  willDelay?: number // 0x18 four byte integer
  requestResponseInfo?: number // 0x19 byte
  responseInfo?: string // 0x1A utf-8 string
  serverReference?: string // 0x1C utf-8 string
  reasonString?: string // 0x1F utf-8 string
  receiveMaximum?: number // 0x21 two byte integer
  topicAliasMaximum?: number // 0x22 two byte integer
  topicAlias?: number // 0x23 two byte integer
  maximumQos?: number // 0x24 byte
  retainAvailable?: number // 0x25 byte
  userProperties?: [string, string][] // 0x26 utf-8 string pair, repeatable
  maximumPacketSize?: number // 0x27 four byte integer
  wildcardSubAvailable?: number // 0x28 byte
  subIdAvailable?: number // 0x29 byte
  sharedSubAvailable?: number // 0x2A byte
  /** Raw bytes appended at the end of the property block, counted in its length. */
  raw?: Uint8Array | number[]
}

type Kind = 'byte' | 'u16' | 'u32' | 'varint' | 'string' | 'binary' | 'pairs'

const TABLE: Record<Exclude<keyof Props, 'raw'>, [number, Kind]> = {
  payloadFormat: [0x01, 'byte'],
  messageExpiry: [0x02, 'u32'],
  contentType: [0x03, 'string'],
  responseTopic: [0x08, 'string'],
  correlationData: [0x09, 'binary'],
  subscriptionIdentifier: [0x0b, 'varint'],
  sessionExpiry: [0x11, 'u32'],
  assignedClientId: [0x12, 'string'],
  serverKeepAlive: [0x13, 'u16'],
  authMethod: [0x15, 'string'],
  authData: [0x16, 'binary'],
  requestProblemInfo: [0x17, 'byte'],
  willDelay: [0x18, 'u32'],
  requestResponseInfo: [0x19, 'byte'],
  responseInfo: [0x1a, 'string'],
  serverReference: [0x1c, 'string'],
  reasonString: [0x1f, 'string'],
  receiveMaximum: [0x21, 'u16'],
  topicAliasMaximum: [0x22, 'u16'],
  topicAlias: [0x23, 'u16'],
  maximumQos: [0x24, 'byte'],
  retainAvailable: [0x25, 'byte'],
  userProperties: [0x26, 'pairs'],
  maximumPacketSize: [0x27, 'u32'],
  wildcardSubAvailable: [0x28, 'byte'],
  subIdAvailable: [0x29, 'byte'],
  sharedSubAvailable: [0x2a, 'byte'],
}

/** Variable Byte Integer, spec 1.5.5 (up to four bytes, 0..268,435,455). */
export function varint(n: number): number[] {
  if (!Number.isInteger(n) || n < 0 || n > 268_435_455) throw new RangeError(`varint out of range: ${n}`)
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return out
}

export const u16 = (n: number): number[] => [(n >>> 8) & 0xff, n & 0xff]
export const u32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]

/** Two byte length followed by the UTF-8 bytes (spec 1.5.4). */
export function str(s: string): number[] {
  const b = new TextEncoder().encode(s)
  return [...u16(b.length), ...b]
}

/** Two byte length followed by the bytes (spec 1.5.6). */
export function bin(b: Uint8Array | string): number[] {
  const bytes = typeof b === 'string' ? new TextEncoder().encode(b) : b
  return [...u16(bytes.length), ...bytes]
}

/** The property bytes without the length prefix. */
export function propertyBytes(p: Props): number[] {
  const out: number[] = []
  for (const [name, value] of Object.entries(p)) {
    if (value === undefined || name === 'raw') continue
    const [id, kind] = TABLE[name as Exclude<keyof Props, 'raw'>]
    if (id === undefined) throw new Error(`unknown property name ${name}`)
    switch (kind) {
      case 'byte': out.push(id, (value as number) & 0xff); break
      case 'u16': out.push(id, ...u16(value as number)); break
      case 'u32': out.push(id, ...u32(value as number)); break
      case 'varint':
        for (const v of Array.isArray(value) ? value : [value as number]) out.push(id, ...varint(v))
        break
      case 'string': out.push(id, ...str(value as string)); break
      case 'binary': out.push(id, ...bin(value as Uint8Array | string)); break
      case 'pairs':
        for (const [k, v] of value as [string, string][]) out.push(id, ...str(k), ...str(v))
        break
    }
  }
  if (p.raw !== undefined) out.push(...p.raw)
  return out
}

/** The property block as it appears in a packet: Variable Byte Integer length, then properties. */
export function properties(p: Props = {}): number[] {
  const body = propertyBytes(p)
  return [...varint(body.length), ...body]
}

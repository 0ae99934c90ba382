import { BlockList, isIP } from 'node:net'

/**
 * The PROXY protocol (HAProxy, v1 text and v2 binary): a load balancer that forwards raw TCP
 * puts the client's address in a header before the first byte of the stream. Only proxies in a
 * configured list are believed.
 */

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V1_MAX = 107

export interface ProxyHeader {
  /** Bytes the header takes at the start of the stream. */
  length: number
  /** The client's address; undefined for LOCAL (health checks) and UNKNOWN connections. */
  address: string | undefined
}

/** Parses a PROXY header at the start of buf: null while more bytes are needed; throws when malformed. */
export function parseProxyHeader(buf: Buffer): ProxyHeader | null {
  if (buf.length === 0) return null
  if (buf[0] === 0x0d) return parseV2(buf)
  if (buf[0] === 0x50) return parseV1(buf)
  throw new Error('no PROXY protocol header')
}

function parseV1(buf: Buffer): ProxyHeader | null {
  const end = buf.indexOf('\r\n')
  if (end < 0) {
    if (buf.length >= V1_MAX) throw new Error('PROXY v1 header longer than 107 bytes')
    if (!'PROXY '.startsWith(buf.subarray(0, 6).toString('latin1'))) throw new Error('no PROXY protocol header')
    return null
  }
  const parts = buf.subarray(0, end).toString('latin1').split(' ')
  if (parts[0] !== 'PROXY') throw new Error('no PROXY protocol header')
  const length = end + 2
  if (parts[1] === 'UNKNOWN') return { length, address: undefined }
  const family = parts[1] === 'TCP4' ? 4 : parts[1] === 'TCP6' ? 6 : 0
  if (family === 0 || parts.length !== 6) throw new Error(`malformed PROXY v1 header: ${JSON.stringify(parts.join(' '))}`)
  const src = parts[2]!
  if (isIP(src) !== family || isIP(parts[3]!) !== family || !/^\d{1,5}$/.test(parts[4]!) || !/^\d{1,5}$/.test(parts[5]!)) {
    throw new Error(`malformed PROXY v1 header: ${JSON.stringify(parts.join(' '))}`)
  }
  return { length, address: src }
}

function parseV2(buf: Buffer): ProxyHeader | null {
  const have = Math.min(buf.length, V2_SIGNATURE.length)
  if (!buf.subarray(0, have).equals(V2_SIGNATURE.subarray(0, have))) throw new Error('no PROXY protocol header')
  if (buf.length < 16) return null
  const verCmd = buf[12]!
  if (verCmd >> 4 !== 2) throw new Error(`PROXY v2 header with version ${verCmd >> 4}`)
  const length = 16 + buf.readUInt16BE(14)
  if (buf.length < length) return null
  const cmd = verCmd & 0x0f
  if (cmd === 0) return { length, address: undefined } // LOCAL: the proxy's own connection
  if (cmd !== 1) throw new Error(`PROXY v2 header with command ${cmd}`)
  const family = buf[13]! >> 4
  if (family === 1 && length >= 16 + 12) return { length, address: [...buf.subarray(16, 20)].join('.') }
  if (family === 2 && length >= 16 + 36) {
    const groups: string[] = []
    for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(16 + i).toString(16))
    return { length, address: groups.join(':') }
  }
  return { length, address: undefined } // AF_UNSPEC / AF_UNIX: no IP to report
}

/** A matcher for a list of trusted proxies (IPs or CIDRs, v4 or v6); throws naming a bad entry. */
export function trustedProxies(list: readonly string[], key: string): (address: string) => boolean {
  if (list.length === 0) return () => false
  const blocks = new BlockList()
  for (const t of list) {
    const [ip, bits] = t.split('/') as [string, string | undefined]
    const family = isIP(ip)
    if (family === 0) throw new Error(`${key}: ${JSON.stringify(t)} is not an IP address or CIDR`)
    const type = family === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) blocks.addAddress(ip, type)
    else {
      const n = Number(bits)
      if (!/^\d+$/.test(bits) || n > (family === 6 ? 128 : 32)) throw new Error(`${key}: ${JSON.stringify(t)} has a bad prefix length`)
      blocks.addSubnet(ip, n, type)
    }
  }
  return (a) => {
    const addr = unmapIPv4(a)
    const family = isIP(addr)
    return family !== 0 && blocks.check(addr, family === 6 ? 'ipv6' : 'ipv4')
  }
}

/** IPv4-mapped IPv6 (::ffff:1.2.3.4, seen on dual-stack sockets) as plain IPv4. */
export function unmapIPv4(a: string): string {
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a
}

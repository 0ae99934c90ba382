/** PROXY protocol v1/v2 headers (HAProxy's proxy-protocol.txt), bytes written out by hand. */
import { describe, expect, test } from 'bun:test'
import { parseProxyHeader, trustedProxies } from '../../src/transport/proxy-protocol.ts'
import { errorOf } from '../helpers/mqtt-error.ts'

const SIG = '0d0a0d0a000d0a515549540a'
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

describe('v1', () => {
  test('TCP4 and TCP6: the source address, and the header length', () => {
    const line = 'PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n'
    expect(parseProxyHeader(Buffer.from(`${line}\x10\x0c`))).toEqual({ length: line.length, address: '203.0.113.7' })
    const six = 'PROXY TCP6 2001:db8::7 2001:db8::1 51234 1883\r\n'
    expect(parseProxyHeader(Buffer.from(six))).toEqual({ length: six.length, address: '2001:db8::7' })
  })

  test('UNKNOWN: no address; a partial header needs more bytes', () => {
    expect(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n'))).toEqual({ length: 15, address: undefined })
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 203.0.'))).toBeNull()
    expect(parseProxyHeader(Buffer.from('PRO'))).toBeNull()
  })

  test('malformed: not PROXY, bad family, bad address, too long', () => {
    expect(errorOf(() => parseProxyHeader(Buffer.from([0x10, 0x0c, 0, 4])))).toContain('no PROXY protocol header')
    expect(errorOf(() => parseProxyHeader(Buffer.from('PROXX TCP4')))).toContain('no PROXY protocol header')
    expect(errorOf(() => parseProxyHeader(Buffer.from('PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n')))).toContain('malformed')
    expect(errorOf(() => parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n')))).toContain('malformed')
    expect(errorOf(() => parseProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(110)}`)))).toContain('longer than 107')
  })
})

describe('v2', () => {
  test('PROXY TCP4 with a TLV after the addresses', () => {
    // ver 2 cmd PROXY, AF_INET STREAM, length 12 + 4 (a NOOP TLV), src 203.0.113.7 dst 10.0.0.1, ports
    const h = hex(`${SIG} 21 11 0010 cb007107 0a000001 c822 075b 04 0001 00`)
    expect(parseProxyHeader(Buffer.concat([h, Buffer.from([0x10, 0x0c])]))).toEqual({ length: 32, address: '203.0.113.7' })
  })

  test('PROXY TCP6, LOCAL, and partial headers', () => {
    const h6 = hex(`${SIG} 21 21 0024 20010db8000000000000000000000007 20010db8000000000000000000000001 c822 075b`)
    expect(parseProxyHeader(h6)).toEqual({ length: 52, address: '2001:db8:0:0:0:0:0:7' })
    expect(parseProxyHeader(hex(`${SIG} 20 00 0000`))).toEqual({ length: 16, address: undefined })
    expect(parseProxyHeader(h6.subarray(0, 20))).toBeNull()
    expect(parseProxyHeader(h6.subarray(0, 5))).toBeNull()
  })

  test('malformed: bad signature, version, command', () => {
    expect(errorOf(() => parseProxyHeader(hex('0d0a0d0a000d0a515549540b 21 11 000c')))).toContain('no PROXY protocol header')
    expect(errorOf(() => parseProxyHeader(hex(`${SIG} 11 11 000c cb007107 0a000001 c822 075b`)))).toContain('version 1')
    expect(errorOf(() => parseProxyHeader(hex(`${SIG} 22 11 000c cb007107 0a000001 c822 075b`)))).toContain('command 2')
  })
})

test('trusted proxy lists: addresses, CIDRs, IPv4-mapped IPv6, and bad entries named', () => {
  const t = trustedProxies(['10.0.0.0/8', '2001:db8::1'], 'mqtt.trustedProxies')
  expect([t('10.1.2.3'), t('::ffff:10.1.2.3'), t('2001:db8::1'), t('11.0.0.1'), t('2001:db8::2')]).toEqual([true, true, true, false, false])
  expect(trustedProxies([], 'k')('10.0.0.1')).toBe(false)
  expect(errorOf(() => trustedProxies(['10.0.0.0/33'], 'mqtt.trustedProxies'))).toBe('mqtt.trustedProxies: "10.0.0.0/33" has a bad prefix length')
  expect(errorOf(() => trustedProxies(['proxy.local'], 'mqtt.trustedProxies'))).toContain('is not an IP address or CIDR')
})

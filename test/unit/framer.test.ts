import { describe, expect, test } from 'bun:test'
import { Framer } from '../../src/codec/framer.ts'
import * as b from '../helpers/packet-builder.ts'
import { reasonOf } from '../helpers/mqtt-error.ts'

type Frame = { header: number; body: string }

/** Pushes every chunk and returns the frames as header + body hex (copied at once). */
function run(framer: Framer, chunks: Uint8Array[]): Frame[] {
  const out: Frame[] = []
  for (const c of chunks) framer.push(Buffer.from(c), { onFrame: (header: number, buf: Buffer, start: number, end: number) => { out.push({ header, body: buf.subarray(start, end).toString('hex') }) } })
  return out
}

const expected = (packets: Buffer[]): Frame[] => packets.map((p) => {
  const { header, body } = b.splitFrame(p)
  return { header, body: body.toString('hex') }
})

const codeOf = (fn: () => void): number => reasonOf(fn)

const PACKETS = [
  b.connect({ version: 5, clientId: 'framer', properties: { sessionExpiry: 60, userProperties: [['a', 'b']] } }),
  b.publish({ topic: 'a/b', payload: 'x'.repeat(300), qos: 1, packetId: 2 }), // two-byte remaining length
  b.pingreq(),
  b.subscribe(3, [{ topic: 'c/#', qos: 2 }]),
  b.puback(2),
  b.disconnect(),
]

describe('Framer', () => {
  test('input split byte by byte yields every packet once, in order', () => {
    const all = Buffer.concat(PACKETS)
    const bytes = [...all].map((x) => Uint8Array.of(x))
    expect(run(new Framer(1 << 20), bytes)).toEqual(expected(PACKETS))
  })

  test('many packets coalesced in one chunk', () => {
    const many = Array.from({ length: 500 }, (_, i) => b.publish({ topic: `t/${i}`, payload: String(i), qos: 1, packetId: i + 1 }))
    expect(run(new Framer(1 << 20), [Buffer.concat(many)])).toEqual(expected(many))
  })

  test('every split point of a two-packet stream', () => {
    const all = Buffer.concat([PACKETS[1]!, PACKETS[2]!])
    for (let cut = 1; cut < all.length; cut++) {
      const frames = run(new Framer(1 << 20), [all.subarray(0, cut), all.subarray(cut)])
      expect(frames).toEqual(expected([PACKETS[1]!, PACKETS[2]!]))
    }
  })

  test('zero-length packets and a lone first byte', () => {
    const f = new Framer(1024)
    expect(run(f, [Uint8Array.of(0xc0)])).toEqual([])
    expect(f.buffered).toBe(1)
    expect(run(f, [Uint8Array.of(0x00, 0xc0, 0x00, 0xe0)])).toEqual([{ header: 0xc0, body: '' }, { header: 0xc0, body: '' }])
    expect(f.buffered).toBe(1)
    expect(run(f, [Uint8Array.of(0x00)])).toEqual([{ header: 0xe0, body: '' }])
    expect(f.buffered).toBe(0)
  })

  test('buffered counts the bytes of an incomplete packet', () => {
    const f = new Framer(1024)
    const p = PACKETS[0]!
    run(f, [p.subarray(0, 7)])
    expect(f.buffered).toBe(7)
    expect(run(f, [p.subarray(7)])).toEqual(expected([p]))
    expect(f.buffered).toBe(0)
  })

  test('the largest four-byte remaining length is accepted as a length', () => {
    // 268,435,455 = ff ff ff 7f; the framer waits for the body rather than failing
    const f = new Framer(268_435_460)
    expect(run(f, [Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0x7f, 0x00)])).toEqual([])
  })
})

describe('Framer.first (a connection with nothing buffered holds no Framer)', () => {
  const collect = (out: Frame[]) => ({ onFrame: (header: number, buf: Buffer, start: number, end: number) => { out.push({ header, body: buf.subarray(start, end).toString('hex') }) } })

  test('a chunk that ends on a packet boundary leaves nothing to hold', () => {
    const out: Frame[] = []
    expect(Framer.first(Buffer.concat(PACKETS), 1 << 20, collect(out))).toBeNull()
    expect(out).toEqual(expected(PACKETS))
  })

  test('at every split point, the rest is held and completed by push', () => {
    const all = Buffer.concat(PACKETS)
    for (let cut = 1; cut < all.length; cut++) {
      const out: Frame[] = []
      const f = Framer.first(all.subarray(0, cut), 1 << 20, collect(out))
      if (f === null) {
        Framer.first(all.subarray(cut), 1 << 20, collect(out))
      } else {
        expect(f.buffered).toBeGreaterThan(0)
        f.push(all.subarray(cut), collect(out))
        expect(f.buffered).toBe(0)
      }
      expect(out).toEqual(expected(PACKETS))
    }
  })

  test('the maximum packet size is checked as soon as the length is known', () => {
    expect(codeOf(() => Framer.first(Buffer.from([0x30, 0x80, 0x08]), 1024, collect([])))).toBe(0x95)
  })
})

describe('Framer errors', () => {
  test('a five-byte remaining length is malformed (0x81), spec 1.5.5', () => {
    expect(codeOf(() => run(new Framer(1 << 30), [Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x7f)]))).toBe(0x81)
  })

  test('the five-byte length is rejected as soon as the fourth continuation byte arrives', () => {
    const f = new Framer(1 << 30)
    expect(run(f, [Uint8Array.of(0x30, 0x80, 0x80, 0x80)])).toEqual([])
    expect(codeOf(() => run(f, [Uint8Array.of(0x80)]))).toBe(0x81)
  })

  test('an oversize packet is rejected (0x95) once its length is known, before its body (spec 3.2.2.3.6)', () => {
    const f = new Framer(100)
    // PUBLISH with remaining length 200 (c8 01): only the fixed header has arrived
    expect(codeOf(() => run(f, [Uint8Array.of(0x30, 0xc8, 0x01)]))).toBe(0x95)
  })

  test('the limit counts the whole packet including the fixed header', () => {
    const exact = b.publish({ topic: 't', payload: 'x'.repeat(95) }) // 2 + (3 + 95) = 100 bytes
    expect(exact.length).toBe(100)
    expect(run(new Framer(100), [exact])).toEqual(expected([exact]))
    const over = b.publish({ topic: 't', payload: 'x'.repeat(96) })
    expect(codeOf(() => run(new Framer(100), [over.subarray(0, 2)]))).toBe(0x95)
  })

  test('frames before an oversize packet in the same chunk are delivered first', () => {
    const f = new Framer(100)
    const seen: number[] = []
    const chunk = Buffer.concat([b.pingreq(), Buffer.from([0x30, 0xc8, 0x01])])
    expect(codeOf(() => f.push(chunk, { onFrame: (h: number) => { seen.push(h) } }))).toBe(0x95)
    expect(seen).toEqual([0xc0])
  })

  test('maxPacketSize can be lowered after construction', () => {
    const f = new Framer(1000)
    const p = b.publish({ topic: 't', payload: 'x'.repeat(200) })
    expect(run(f, [p])).toEqual(expected([p]))
    f.maxPacketSize = 100
    expect(codeOf(() => run(f, [p]))).toBe(0x95)
  })
})

describe('Framer: CONNECT and AUTH cap (limits.maxConnectPacketSize)', () => {
  test('a CONNECT or AUTH over the cap is refused from its length alone; other packets may be larger', () => {
    const none = { onFrame() {} }
    expect(codeOf(() => Framer.first(Buffer.from([0x10, ...b.varint(70_000)]), 1 << 20, none, { maxConnectPacketSize: 65_536, maxControlPacketSize: 1 << 20 }))).toBe(0x95)
    expect(codeOf(() => Framer.first(Buffer.from([0xf0, ...b.varint(70_000)]), 1 << 20, none, { maxConnectPacketSize: 65_536, maxControlPacketSize: 1 << 20 }))).toBe(0x95)
    expect(Framer.first(Buffer.from([0x30, ...b.varint(70_000)]), 1 << 20, none, { maxConnectPacketSize: 65_536, maxControlPacketSize: 1 << 20 })?.buffered).toBe(4)
  })
})

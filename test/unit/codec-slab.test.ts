import { describe, expect, test } from 'bun:test'
import type { Message } from '../../src/codec/message.ts'
import { compactMessage, frameBuffer, pinsMore, SLAB_MAX, SLAB_SIZE } from '../../src/codec/slab.ts'

function message(frame: Buffer | undefined, payload: Buffer): Message {
  return { topic: 't', payload, qos: 0, retain: false, props: null, expiresAt: 0, origin: 'c', frame, frameKey: frame ? 0 : -1 }
}

describe('frameBuffer', () => {
  test('small frames are views of one shared slab and do not overlap', () => {
    const a = frameBuffer(100)
    const b = frameBuffer(37)
    const c = frameBuffer(SLAB_MAX)
    expect([a.length, b.length, c.length]).toEqual([100, 37, SLAB_MAX])
    expect(a.buffer.byteLength).toBe(SLAB_SIZE)
    a.fill(1); b.fill(2); c.fill(3)
    expect(a.every((x) => x === 1)).toBe(true)
    expect(b.every((x) => x === 2)).toBe(true)
    expect(c.every((x) => x === 3)).toBe(true)
  })

  test('a full slab is replaced, never overrun', () => {
    const views = Array.from({ length: Math.ceil(SLAB_SIZE / 1000) + 2 }, (_, i) => frameBuffer(1000).fill(i))
    expect(new Set(views.map((v) => v.buffer)).size).toBeGreaterThan(1)
    views.forEach((v, i) => expect(v.every((x) => x === (i & 0xff))).toBe(true))
  })

  test('a frame above SLAB_MAX gets a buffer of its own', () => {
    const big = frameBuffer(SLAB_MAX + 1)
    expect(big.length).toBe(SLAB_MAX + 1)
    expect(pinsMore(big)).toBe(false)
  })
})

describe('compactMessage', () => {
  test('a frame and payload cut from a slab get one buffer of their own, payload still its tail', () => {
    const frame = frameBuffer(10)
    frame.set([0x30, 8, 0, 1, 0x74, 0, 1, 2, 3, 4])
    const msg = message(frame, frame.subarray(5))
    expect(pinsMore(msg.payload)).toBe(true)
    compactMessage(msg)
    expect(msg.frame!.buffer.byteLength).toBe(10)
    expect([...msg.frame!]).toEqual([0x30, 8, 0, 1, 0x74, 0, 1, 2, 3, 4])
    expect(msg.payload.buffer).toBe(msg.frame!.buffer)
    expect([...msg.payload]).toEqual([0, 1, 2, 3, 4])
    // the slab may be reused by later frames: the message no longer sees it
    frame.fill(0xee)
    expect([...msg.payload]).toEqual([0, 1, 2, 3, 4])
  })

  test('a payload view without a frame (QoS 1/2) is copied', () => {
    const frame = frameBuffer(12).fill(7)
    const msg = message(undefined, frame.subarray(6))
    compactMessage(msg)
    expect(msg.payload.buffer.byteLength).toBe(6)
    expect([...msg.payload]).toEqual([7, 7, 7, 7, 7, 7])
  })

  test('buffers of their own are left as they are', () => {
    const frame = Buffer.from([0x30, 4, 0, 1, 0x74, 9])
    const payload = frame.subarray(5)
    const msg = message(frame, payload)
    compactMessage(msg)
    expect(msg.frame).toBe(frame)
    expect(msg.payload).toBe(payload)
  })
})

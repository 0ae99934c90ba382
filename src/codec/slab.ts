import type { Message } from './message.ts'

/**
 * Small PUBLISH frames are copied into views of shared 16 KiB slabs instead of buffers of
 * their own. In Bun (JSC) a small buffer allocated on its own keeps its bytes inline in the
 * GC heap, and the first view taken of it (the payload, `subarray`) has to move them out to a
 * separate ArrayBuffer: ~400 ns per message against ~60 ns for a slab view (measured with
 * Bun 1.4.4). Node.js pools small Buffer.allocUnsafe() results the same way.
 *
 * The price: a view keeps its whole slab alive. Messages that stay longer than the turn that
 * routes them (retained, queued, unacknowledged when the client goes away) are given buffers
 * of their own with compactMessage().
 */
export const SLAB_SIZE = 16384
/** Frames above this get a buffer of their own (a large buffer is not stored inline). */
export const SLAB_MAX = 2048

let slab = Buffer.allocUnsafe(0)
let slabAt = 0

/** An uninitialised buffer of n bytes; a view of the current slab when n <= SLAB_MAX. */
export function frameBuffer(n: number): Buffer {
  if (n > SLAB_MAX) return Buffer.allocUnsafe(n)
  if (slabAt + n > slab.length) {
    slab = Buffer.allocUnsafe(SLAB_SIZE)
    slabAt = 0
  }
  const b = slab.subarray(slabAt, slabAt + n)
  // 8-byte steps keep every frame aligned like an allocation of its own
  slabAt += (n + 7) & ~7
  return b
}

/** True when b is a small part of a larger buffer (a slab, or a read buffer it was cut from). */
export function pinsMore(b: Uint8Array): boolean {
  return b.buffer.byteLength > b.length + 64 && b.buffer.byteLength > 2 * b.length
}

/**
 * Gives a message that is about to be kept (retained store, queue, unacknowledged window of an
 * offline session) buffers of its own, so it does not keep a whole slab or read buffer alive.
 * The message's bytes do not change, so every holder of the object may see the swap.
 */
export function compactMessage(msg: Message): void {
  const payload = msg.payload
  const frame = msg.frame
  if (frame !== undefined && frame.buffer === payload.buffer) {
    if (!pinsMore(frame)) return
    // the payload is the tail of the received frame
    const own = Buffer.from(frame)
    msg.frame = own
    msg.payload = own.subarray(own.length - payload.length)
    return
  }
  if (frame !== undefined && pinsMore(frame)) msg.frame = Buffer.from(frame)
  if (pinsMore(payload)) msg.payload = Buffer.from(payload)
}

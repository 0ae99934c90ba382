/**
 * Hostile clients over real sockets: per-address connection limits and connection rate,
 * per-client publish rate and bytes rate, and slow-loris connections (no CONNECT, a packet
 * trickled byte by byte, a subscriber that stops reading). Each time the offender alone is
 * closed while other clients keep working.
 */
import { describe, expect, test } from 'bun:test'
import { connect as netConnect, type Socket } from 'node:net'
import { limitCounters } from '../../src/broker/limits.ts'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'
import { startBroker } from '../helpers/start-broker.ts'
import { bystander } from '../helpers/bystander.ts'

type V = 4 | 5
const MESSAGE_RATE_TOO_HIGH = 0x96
const QUOTA_EXCEEDED = 0x97

/**
 * A plain socket from a chosen source address (127.0.0.1 or 127.0.0.2: both loopback, so the
 * broker sees two different client addresses). Collects what it receives; waits are on events.
 */
class Wire {
  readonly socket: Socket
  received = Buffer.alloc(0)
  closed = false
  #wake: (() => void)[] = []

  private constructor(socket: Socket) {
    this.socket = socket
    socket.on('data', (d: Buffer) => { this.received = Buffer.concat([this.received, d]); this.#notify() })
    socket.on('close', () => { this.closed = true; this.#notify() })
    socket.on('error', () => {})
  }

  static open(port: number, localAddress = '127.0.0.1'): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const s = netConnect({ port, host: '127.0.0.1', localAddress })
      s.once('error', reject)
      s.once('connect', () => resolve(new Wire(s)))
    })
  }

  /** Sends CONNECT; 'accepted' on a CONNACK with code 0, 'refused' when closed without one. */
  async handshake(clientId: string, version: V = 4): Promise<'accepted' | 'refused'> {
    this.socket.write(b.connect({ version, clientId }))
    await this.until(() => this.received.length >= 4 || this.closed, 3000, 'CONNACK or close')
    if (this.received.length >= 4 && this.received[0] === 0x20 && this.received[3] === 0) return 'accepted'
    if (this.received.length === 0 && this.closed) return 'refused'
    throw new Error(`unexpected answer to CONNECT: ${this.received.toString('hex')} closed=${this.closed}`)
  }

  until(ready: () => boolean, ms: number, what: string): Promise<void> {
    if (ready()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const wake = () => {
        if (!ready()) return
        clearTimeout(timer)
        this.#wake = this.#wake.filter((w) => w !== wake)
        resolve()
      }
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms)
      this.#wake.push(wake)
    })
  }

  /** Sends PINGREQ and waits for PINGRESP: the connection is alive and served. */
  async ping(): Promise<void> {
    const before = this.received.length
    this.socket.write(b.pingreq())
    await this.until(() => this.received.subarray(before).includes(0xd0) || this.closed, 3000, 'PINGRESP')
    expect(this.closed).toBe(false)
  }

  destroy(): void {
    this.socket.destroy()
  }

  #notify(): void {
    for (const w of [...this.#wake]) w()
  }
}

/** v5: DISCONNECT with `reason` then close; v3.1.1: close without any packet. */
async function expectClosedWith(c: RawClient, version: V, reason: number): Promise<void> {
  if (version === 5) {
    const d = await c.nextOf('disconnect')
    expect(d.cmd === 'disconnect' ? d.reasonCode : -1).toBe(reason)
  }
  await c.closed()
}

describe('per-address connection limits', () => {
  test('mqtt.maxConnectionsPerAddress=2: a third connection from 127.0.0.1 is closed unread; 127.0.0.2 and the first two keep working; a slot frees on close', async () => {
    await using broker = await startBroker({ VMQTT_MQTT_MAX_CONNECTIONS_PER_ADDRESS: '2' })
    const a1 = await Wire.open(broker.port)
    const a2 = await Wire.open(broker.port)
    const a3 = await Wire.open(broker.port)
    const other = await Wire.open(broker.port, '127.0.0.2')
    try {
      expect(await a1.handshake('a1')).toBe('accepted')
      expect(await a2.handshake('a2')).toBe('accepted')
      expect(await a3.handshake('a3')).toBe('refused')
      expect(await other.handshake('other')).toBe('accepted')
      await a1.ping()
      await a2.ping()
      await other.ping()
      expect(limitCounters(broker.broker).refusedPerAddress).toBe(1)
      // closing one frees its slot for the address
      a1.socket.end()
      await a1.until(() => a1.closed, 3000, 'a1 to close')
      // the client sees its close only after the broker closed its side (and counted it)
      expect(broker.broker.connectionCount).toBe(2)
      const a4 = await Wire.open(broker.port)
      try {
        expect(await a4.handshake('a4')).toBe('accepted')
      } finally {
        a4.destroy()
      }
    } finally {
      for (const w of [a1, a2, a3, other]) w.destroy()
    }
  })

  test('mqtt.connectRatePerAddress=1: a burst from 127.0.0.1 gets one connection in; 127.0.0.2 is not affected', async () => {
    await using broker = await startBroker({ VMQTT_MQTT_CONNECT_RATE_PER_ADDRESS: '1' })
    const started = Date.now()
    const burst = await Promise.all(Array.from({ length: 6 }, () => Wire.open(broker.port)))
    const other = await Wire.open(broker.port, '127.0.0.2')
    try {
      const results = await Promise.all(burst.map((w, i) => w.handshake(`burst-${i}`)))
      const elapsed = Date.now() - started
      const accepted = results.filter((r) => r === 'accepted').length
      // the bucket holds one token and refills one per second
      expect(accepted).toBeGreaterThanOrEqual(1)
      expect(accepted).toBeLessThanOrEqual(1 + Math.floor(elapsed / 1000))
      expect(limitCounters(broker.broker).refusedRate).toBe(6 - accepted)
      expect(await other.handshake('other')).toBe('accepted')
      await other.ping()
      for (let i = 0; i < burst.length; i++) if (results[i] === 'accepted') await burst[i]!.ping()
    } finally {
      for (const w of [...burst, other]) w.destroy()
    }
  })
})

describe.each([4, 5] as const)('MQTT v%d publish limits', (version) => {
  test(`limits.publishRate=10: a burst of 40 PUBLISH closes the client (${version === 5 ? 'DISCONNECT 0x96' : 'closed'}); 5 are fine; a bystander keeps working`, async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_PUBLISH_RATE: '10' })
    await using ok = await bystander(broker.port, version, `rate-${version}`)
    const { client: calm } = await RawClient.open(broker.port, { version, clientId: 'calm' })
    const { client: noisy } = await RawClient.open(broker.port, { version, clientId: 'noisy' })
    try {
      calm.send(Buffer.concat(Array.from({ length: 5 }, () => b.publish({ topic: 'r/calm', payload: 'x', version }))))
      calm.send(b.pingreq())
      expect((await calm.nextOf('pingresp')).cmd).toBe('pingresp')
      noisy.send(Buffer.concat(Array.from({ length: 40 }, () => b.publish({ topic: 'r/noisy', payload: 'x', version }))))
      await expectClosedWith(noisy, version, MESSAGE_RATE_TOO_HIGH)
      expect(limitCounters(broker.broker).publishRate).toBe(1)
      expect(calm.isClosed).toBe(false)
      await ok.check()
    } finally {
      calm.destroy()
      noisy.destroy()
    }
  })

  test(`limits.publishBytesRate=10000: 5 x 4000-byte PUBLISH at once close the client (${version === 5 ? 'DISCONNECT 0x97' : 'closed'}); one is fine`, async () => {
    await using broker = await startBroker({ VMQTT_LIMITS_PUBLISH_BYTES_RATE: '10000' })
    await using ok = await bystander(broker.port, version, `bytes-${version}`)
    const { client: calm } = await RawClient.open(broker.port, { version, clientId: 'calm' })
    const { client: noisy } = await RawClient.open(broker.port, { version, clientId: 'noisy' })
    const big = (topic: string) => b.publish({ topic, payload: 'y'.repeat(4000), version })
    try {
      calm.send(big('r/calm'))
      calm.send(b.pingreq())
      expect((await calm.nextOf('pingresp')).cmd).toBe('pingresp')
      noisy.send(Buffer.concat(Array.from({ length: 5 }, () => big('r/noisy'))))
      await expectClosedWith(noisy, version, QUOTA_EXCEEDED)
      expect(limitCounters(broker.broker).publishBytesRate).toBe(1)
      expect(calm.isClosed).toBe(false)
      await ok.check()
    } finally {
      calm.destroy()
      noisy.destroy()
    }
  })
})

describe('slow-loris', () => {
  test('mqtt.connectTimeout=1: a connection that never sends CONNECT is closed after about a second', async () => {
    await using broker = await startBroker({ VMQTT_MQTT_CONNECT_TIMEOUT: '1' })
    const idle = await RawClient.connect(broker.port)
    const started = Date.now()
    try {
      await idle.closed(3000)
      expect(Date.now() - started).toBeGreaterThanOrEqual(900)
      expect(broker.broker.connectionCount).toBe(0)
    } finally {
      idle.destroy()
    }
  })

  test.each([4, 5] as const)('limits.packetTimeout=1: a PUBLISH trickled one byte per 100 ms (v%d) is closed after about a second; a bystander keeps working', async (version) => {
    await using broker = await startBroker({ VMQTT_LIMITS_PACKET_TIMEOUT: '1' })
    await using ok = await bystander(broker.port, version, `trickle-${version}`)
    const { client } = await RawClient.open(broker.port, { version, clientId: 'trickler', keepalive: 60 })
    const bytes = b.publish({ topic: 'slow/t', payload: 'z'.repeat(200), version })
    let sent = 0
    const started = Date.now()
    // the trickle is the behaviour under test, not a synchronisation
    const timer = setInterval(() => { if (sent < bytes.length && !client.isClosed) client.send([bytes[sent++]!]) }, 100)
    try {
      await client.closed(4000)
      const elapsed = Date.now() - started
      expect(elapsed).toBeGreaterThanOrEqual(900)
      expect(sent).toBeLessThan(bytes.length)
      expect(limitCounters(broker.broker).packetTimeouts).toBe(1)
      await ok.check()
    } finally {
      clearInterval(timer)
      client.destroy()
    }
  })

  test('limits.maxPendingBytes=1 MiB: a subscriber that stops reading is closed while the publisher and a reading subscriber keep working; memory stays bounded', async () => {
    const CAP = 1024 * 1024
    // a large inflight window lets QoS 1 output reach the slow client beyond what the kernel buffers hold
    await using broker = await startBroker({ VMQTT_LIMITS_MAX_PENDING_BYTES: String(CAP), VMQTT_LIMITS_MAX_INFLIGHT: '65535' })
    const slow = await Wire.open(broker.port)
    expect(await slow.handshake('slow')).toBe('accepted')
    slow.socket.write(b.subscribe(1, [{ topic: 'flood/#', qos: 1 }]))
    await slow.until(() => slow.received.length >= 4 + 5, 3000, 'SUBACK')
    slow.socket.pause()
    const { client: reader } = await RawClient.open(broker.port, { version: 4, clientId: 'reader' })
    reader.send(b.subscribe(1, [{ topic: 'flood/#', qos: 0 }]))
    await reader.nextOf('suback')
    const { client: pub } = await RawClient.open(broker.port, { version: 4, clientId: 'flooder' })
    const payload = Buffer.alloc(64 * 1024, 0x61)
    const rssBefore = process.memoryUsage().rss
    const counters = limitCounters(broker.broker)
    let sent = 0
    let afterKick = 0
    try {
      // publish one message at a time (QoS 1: PUBACK after routing); 20 more once the slow one is gone
      while (sent < 2000 && afterKick < 20) {
        const id = (sent % 65000) + 1
        pub.send(b.publish({ topic: 'flood/x', payload, qos: 1, packetId: id }))
        expect((await pub.nextOf('puback')).messageId).toBe(id)
        const p = await reader.nextOf('publish')
        expect(p.cmd === 'publish' && p.payload.length).toBe(payload.length)
        sent++
        if (counters.slowConsumers > 0) afterKick++
      }
      expect(counters.slowConsumers).toBe(1)
      expect(broker.broker.isOnline('slow')).toBe(false)
      expect(broker.broker.isOnline('reader')).toBe(true)
      // the slow client got at most what the kernel buffers held plus the cap before it was closed
      expect(sent * payload.length).toBeGreaterThan(CAP)
      const grown = process.memoryUsage().rss - rssBefore
      // test process = broker + clients; ${sent} x 64 KiB went through it
      expect(grown).toBeLessThan(200 * 1024 * 1024)
      // the paused client finds the connection closed once it reads again
      slow.socket.resume()
      await slow.until(() => slow.closed, 5000, 'the slow client to see the close')
    } finally {
      slow.destroy()
      await reader.close()
      await pub.close()
    }
  }, 30_000)
})

test('packets sent while the CONNECT is still being authenticated are held up to 1 MiB, then the connection is closed', async () => {
  const { addOrUpdateUser } = await import('../../src/auth/password-file.ts')
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'vmqtt-held-'))
  try {
    const file = join(dir, 'passwd')
    await addOrUpdateUser(file, 'alice', 'wonderland')
    // a wrong password waits 3 s before its refusal: meanwhile the client streams data
    await using br = await startBroker({ VMQTT_AUTH_PASSWORD_FILE: file, VMQTT_AUTH_FAIL_DELAY: '3000', VMQTT_AUTH_FAIL_DELAY_MAX: '3000', VMQTT_AUTH_ANONYMOUS: 'true' })
    const c = await RawClient.connect(br.port, { version: 5 })
    c.send(b.connect({ version: 5, clientId: 'streamer', username: 'alice', password: 'wrong' }))
    const big = b.publish({ topic: 'flood', payload: Buffer.alloc(256 * 1024), qos: 0, version: 5 })
    for (let i = 0; i < 8; i++) c.send(big)
    // closed at the fifth 256 KiB packet, long before the 3 s refusal
    const t0 = Date.now()
    await c.closed(2000)
    expect(Date.now() - t0).toBeLessThan(2000)
    // everyone else is still served (from another address: this one has a failed login to wait out)
    const { connack } = await RawClient.open(br.port, { version: 5, clientId: 'other' }, { localAddress: '127.0.0.2' })
    expect(connack.cmd === 'connack' ? connack.reasonCode : -1).toBe(0)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

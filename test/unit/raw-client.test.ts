/**
 * Self-test of the RawClient helper against a scripted TCP server (no broker involved), so that
 * a broken helper cannot make broker tests pass by accident.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import * as b from '../helpers/packet-builder.ts'
import { RawClient } from '../helpers/raw-client.ts'

interface Scripted {
  port: number
  socket: Promise<Socket>
  received: () => Buffer
  /** Resolves once the server has received at least n bytes. */
  receivedAtLeast: (n: number) => Promise<Buffer>
  server: Server
}

const servers: Server[] = []
afterEach(() => {
  for (const s of servers.splice(0)) s.close()
})

/** A server that accepts one connection and records what it receives. */
async function scripted(): Promise<Scripted> {
  const chunks: Buffer[] = []
  const waiters: (() => void)[] = []
  let resolveSocket!: (s: Socket) => void
  const socket = new Promise<Socket>((r) => { resolveSocket = r })
  const server = createServer((s) => {
    s.on('data', (c: Buffer) => { chunks.push(c); for (const w of waiters.splice(0)) w() })
    s.on('error', () => {})
    resolveSocket(s)
  })
  servers.push(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const received = () => Buffer.concat(chunks)
  const receivedAtLeast = async (n: number): Promise<Buffer> => {
    while (received().length < n) await new Promise<void>((r) => waiters.push(r))
    return received()
  }
  return { port: (server.address() as AddressInfo).port, socket, received, receivedAtLeast, server }
}

describe('RawClient', () => {
  test('send writes the exact bytes; next decodes a reply split across writes', async () => {
    const srv = await scripted()
    await using c = await RawClient.connect(srv.port)
    const connect = b.connect({ clientId: 'raw' })
    c.send(connect)
    const s = await srv.socket
    expect((await srv.receivedAtLeast(connect.length)).toString('hex')).toBe(connect.toString('hex'))
    const connack = b.connack({ sessionPresent: true })
    s.write(connack.subarray(0, 1))
    s.write(connack.subarray(1))
    expect(await c.next()).toMatchObject({ cmd: 'connack', sessionPresent: true, returnCode: 0 })
  })

  test('coalesced packets come out one by one; nextRaw gives the exact frame', async () => {
    const srv = await scripted()
    await using c = await RawClient.connect(srv.port)
    const frames = [b.suback(1, [0]), b.pingresp(), b.publish({ topic: 'a', payload: 'x'.repeat(300), qos: 1, packetId: 9 })]
    ;(await srv.socket).write(Buffer.concat(frames))
    expect((await c.nextRaw()).toString('hex')).toBe(frames[0]!.toString('hex'))
    expect(await c.next()).toMatchObject({ cmd: 'pingresp' })
    const p = await c.next()
    expect(p).toMatchObject({ cmd: 'publish', topic: 'a', qos: 1, messageId: 9 })
  })

  test('nextOf skips other packet types', async () => {
    const srv = await scripted()
    await using c = await RawClient.connect(srv.port)
    ;(await srv.socket).write(Buffer.concat([b.pingresp(), b.pingresp(), b.puback(4)]))
    expect(await c.nextOf('puback')).toMatchObject({ cmd: 'puback', messageId: 4 })
  })

  test('a v5 CONNECT switches decoding to v5 (CONNACK properties are read)', async () => {
    const srv = await scripted()
    await using c = await RawClient.connect(srv.port)
    c.send(b.connect({ version: 5, clientId: 'v5' }))
    expect(c.version).toBe(5)
    ;(await srv.socket).write(b.connack({ version: 5, code: 0, properties: { topicAliasMaximum: 9 } }))
    expect(await c.next()).toMatchObject({ cmd: 'connack', reasonCode: 0, properties: { topicAliasMaximum: 9 } })
  })

  test('next rejects with a clear message on timeout', async () => {
    const srv = await scripted()
    await using c = await RawClient.connect(srv.port)
    await srv.socket
    await expect(c.next(50)).rejects.toThrow(/timed out after 50ms waiting for a packet \(connection open\)/)
    await expect(c.nextOf('suback', 50)).rejects.toThrow(/nextOf\('suback'\)/)
  })

  test('closed resolves when the server closes; unread packets stay readable', async () => {
    const srv = await scripted()
    const c = await RawClient.connect(srv.port)
    const s = await srv.socket
    s.end(b.pingresp())
    await c.closed()
    expect(c.isClosed).toBe(true)
    expect(await c.next()).toMatchObject({ cmd: 'pingresp' })
    await expect(c.next(1000)).rejects.toThrow(/closed by the server/)
  })

  test('closed rejects when the server keeps the connection open', async () => {
    const srv = await scripted()
    await using c = await RawClient.connect(srv.port)
    await srv.socket
    await expect(c.closed(50)).rejects.toThrow(/waiting for the server to close the connection/)
  })

  test('expectNothing passes on silence and fails on a packet or a close', async () => {
    const srv = await scripted()
    const c = await RawClient.connect(srv.port)
    const s = await srv.socket
    await c.expectNothing(30)
    const late = c.expectNothing(2000)
    s.write(b.pingresp())
    await expect(late).rejects.toThrow(/expected silence but received pingresp/)
    await c.next()
    const closing = c.expectNothing(2000)
    s.end()
    await expect(closing).rejects.toThrow(/closed the connection/)
    await c.expectNothing(10, { allowClose: true })
  })

  test('asyncDispose ends the connection', async () => {
    const srv = await scripted()
    const ended = new Promise<void>((r) => void srv.socket.then((s) => s.on('end', () => r())))
    {
      await using c = await RawClient.connect(srv.port)
      c.send(b.pingreq())
    }
    await ended
    expect((await srv.receivedAtLeast(2)).toString('hex')).toBe('c000')
  })

  test('connecting to a closed port rejects with the address', async () => {
    const srv = await scripted()
    const port = srv.port
    await new Promise<void>((r) => srv.server.close(() => r()))
    await expect(RawClient.connect(port)).rejects.toThrow(new RegExp(`127\\.0\\.0\\.1:${port}`))
  })
})

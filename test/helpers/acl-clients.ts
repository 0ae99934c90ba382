/**
 * Raw-socket clients for ACL tests: CONNECT as a user of a test password file (the password is
 * the user name reversed) or anonymously, subscribe and read the SUBACK codes, publish at QoS 1
 * and read the PUBACK code, read the next message, subscribe and collect retained messages.
 */
import { expect } from 'bun:test'
import type { IConnackPacket, IPublishPacket, IPubackPacket, ISubackPacket } from 'mqtt-packet'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as b from './packet-builder.ts'
import { RawClient } from './raw-client.ts'

export type V = 4 | 5
export const SUB_REFUSED = { 4: 0x80, 5: 0x87 } as const

/** A user's password in the files passwdFile() writes: the user name reversed. */
export const pw = (user: string) => [...user].reverse().join('')

/** Writes `dir/passwd` for these users (cheap argon2id hashes: fast tests); returns its path. */
export async function passwdFile(dir: string, users: string[]): Promise<string> {
  const lines: string[] = []
  for (const u of users) lines.push(`${u}:${await Bun.password.hash(pw(u), { algorithm: 'argon2id', memoryCost: 1024, timeCost: 1 })}`)
  const path = join(dir, 'passwd')
  writeFileSync(path, `${lines.join('\n')}\n`)
  return path
}

/** A rules file in a directory of its own under `dir` (the file watcher watches the directory). */
export function aclFileIn(dir: string, text: string): string {
  const p = join(mkdtempSync(join(dir, 'acl-')), 'acl.conf')
  writeFileSync(p, text)
  return p
}

let seq = 0
/** The client id the last attempt() without one used. */
export const lastClientId = () => `acl-${seq}`

/** A socket from a chosen local address wrapped in a RawClient (whose constructor is private in TS only). */
export function connectFrom(port: number, localAddress: string, version: V): Promise<RawClient> {
  return RawClient.connect(port, { version, localAddress })
}

export interface Who { version: V; user?: string; clientId?: string; will?: b.WillOpts; from?: string; persistent?: boolean }

/** CONNECT as `user` (password from pw()) or anonymously; returns the CONNACK code and the client. */
export async function attempt(port: number, w: Who): Promise<{ code: number; c: RawClient }> {
  const c = w.from !== undefined ? await connectFrom(port, w.from, w.version) : await RawClient.connect(port, { version: w.version })
  c.send(b.connect({
    version: w.version, clientId: w.clientId ?? `acl-${++seq}`, will: w.will,
    ...(w.user !== undefined ? { username: w.user, password: pw(w.user) } : {}),
    ...(w.persistent === true ? { clean: false, ...(w.version === 5 ? { properties: { sessionExpiry: 3600 } } : {}) } : {}),
  }))
  const ack = (await c.nextOf('connack')) as IConnackPacket
  return { code: (w.version === 5 ? ack.reasonCode : ack.returnCode)!, c }
}

export async function accepted(port: number, w: Who): Promise<RawClient> {
  const { code, c } = await attempt(port, w)
  if (code !== 0) { c.destroy(); throw new Error(`CONNECT of ${w.user ?? 'anonymous'} refused with 0x${code.toString(16)}`) }
  return c
}

let packetIds = 0
export const pid = () => (packetIds = (packetIds % 60000) + 1)

export async function subackCodes(c: RawClient, version: V, filters: string[]): Promise<number[]> {
  const id = pid()
  c.send(b.subscribe(id, filters.map((topic) => ({ topic, qos: 1 })), { version }))
  const ack = (await c.nextOf('suback')) as ISubackPacket
  expect(ack.messageId).toBe(id)
  return ack.granted as number[]
}

/** PUBLISH packets that arrived while waiting for something else (a client's own message may come before its PUBACK). */
const early = new WeakMap<RawClient, IPublishPacket[]>()

/** Publishes at QoS 1; returns the PUBACK reason code (v3: 0; v5 0x10 No matching subscribers, a success, as 0). */
export async function publish1(c: RawClient, version: V, topic: string, payload: string, retain = false): Promise<number> {
  const id = pid()
  c.send(b.publish({ topic, payload, qos: 1, packetId: id, version, retain }))
  for (;;) {
    const p = await c.next()
    if (p.cmd === 'publish') { early.set(c, [...(early.get(c) ?? []), p]); continue }
    if (p.cmd !== 'puback') throw new Error(`expected PUBACK, got ${p.cmd}`)
    const ack = p as IPubackPacket
    expect(ack.messageId).toBe(id)
    const code = ack.reasonCode ?? 0
    return code === 0x10 ? 0 : code
  }
}

/** The next PUBLISH (QoS 1 ones are acknowledged). */
export async function nextMessage(c: RawClient): Promise<[string, string]> {
  const p = early.get(c)?.shift() ?? ((await c.nextOf('publish')) as IPublishPacket)
  if (p.qos > 0) c.send(b.puback(p.messageId!, { version: c.version }))
  return [p.topic, p.payload.toString()]
}

/** Subscribes and returns [SUBACK codes, the retained messages sent before the PINGRESP that follows]. */
export async function subscribeCollect(c: RawClient, version: V, filters: string[]): Promise<[number[], [string, string][]]> {
  const id = pid()
  c.send(b.subscribe(id, filters.map((topic) => ({ topic, qos: 1 })), { version }))
  c.send(b.pingreq())
  let codes: number[] | null = null
  const msgs: [string, string][] = []
  for (;;) {
    const p = await c.next()
    if (p.cmd === 'pingresp') break
    if (p.cmd === 'suback') codes = p.granted as number[]
    else if (p.cmd === 'publish') msgs.push([p.topic, p.payload.toString()])
    else throw new Error(`unexpected ${p.cmd}`)
  }
  if (codes === null) throw new Error('PINGRESP came before SUBACK')
  return [codes, msgs.sort((x, y) => x[0].localeCompare(y[0]))]
}


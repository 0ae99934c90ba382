import { expect } from 'bun:test'
import * as b from './packet-builder.ts'
import { RawClient } from './raw-client.ts'

let seq = 0

/**
 * A subscriber and a publisher on a topic of their own; check() proves the broker still routes
 * for them (the "everyone else keeps being served" half of a hostile-input test).
 */
export async function bystander(port: number, version: 4 | 5, name = `ok-${++seq}`) {
  const { client: sub } = await RawClient.open(port, { version, clientId: `${name}-sub` })
  const { client: pub } = await RawClient.open(port, { version, clientId: `${name}-pub` })
  sub.send(b.subscribe(1, [{ topic: `ok/${name}`, qos: 1 }], { version }))
  await sub.nextOf('suback')
  let n = 0
  return {
    async check(): Promise<void> {
      const payload = `msg-${++n}`
      pub.send(b.publish({ topic: `ok/${name}`, payload, qos: 1, packetId: n, version }))
      expect((await pub.nextOf('puback')).messageId).toBe(n)
      const p = await sub.nextOf('publish')
      expect(p.cmd === 'publish' ? `${p.topic} ${p.payload.toString()}` : p.cmd).toBe(`ok/${name} ${payload}`)
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await sub.close()
      await pub.close()
    },
  }
}

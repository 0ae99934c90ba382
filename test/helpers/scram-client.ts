import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'

/** RFC 5802 SCRAM-SHA-256 client side for tests, independent of src/auth/scram.ts. */
export function scramClient(user: string, password: string, gs2 = 'n,,') {
  const bare = `n=${user},r=${randomBytes(18).toString('base64')}`
  let expected = ''
  return {
    first: gs2 + bare,
    final(serverFirst: string): string {
      const f = Object.fromEntries(serverFirst.split(',').map((a) => [a[0], a.slice(2)]))
      const salted = pbkdf2Sync(password, Buffer.from(f.s!, 'base64'), Number(f.i), 32, 'sha256')
      const mac = (k: Buffer, t: string) => createHmac('sha256', k).update(t).digest()
      const clientKey = mac(salted, 'Client Key')
      const withoutProof = `c=${Buffer.from(gs2).toString('base64')},r=${f.r}`
      const authMessage = `${bare},${serverFirst},${withoutProof}`
      const sig = mac(createHash('sha256').update(clientKey).digest(), authMessage)
      expected = `v=${mac(mac(salted, 'Server Key'), authMessage).toString('base64')}`
      return `${withoutProof},p=${Buffer.from(clientKey.map((x, i) => x ^ sig[i]!)).toString('base64')}`
    },
    serverFinal: () => expected,
  }
}

export type ScramClient = ReturnType<typeof scramClient>

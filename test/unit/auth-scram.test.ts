/**
 * SCRAM-SHA-256 server method against an independent client written here with node:crypto,
 * plus the RFC 7677 section 3 exchange to pin the math.
 */
import { describe, expect, test } from 'bun:test'
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'
import type { AuthContext, AuthStep } from '../../src/broker/auth-hooks.ts'
import { decodeScramCredentials, encodeScramCredentials, scramCredentials, ScramSha256Auth, type ScramCredentials } from '../../src/auth/scram.ts'

/** Independent client (RFC 5802 section 3), not sharing code with src/auth/scram.ts. */
class Client {
  readonly clientFirstBare: string
  constructor(
    readonly user: string,
    readonly password: string,
    readonly cnonce = randomBytes(18).toString('base64'),
    readonly gs2 = 'n,,',
  ) {
    this.clientFirstBare = `n=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${cnonce}`
  }
  first(): Buffer {
    return Buffer.from(this.gs2 + this.clientFirstBare)
  }
  #serverKey = Buffer.alloc(0)
  #authMessage = ''
  final(serverFirst: string): Buffer {
    const f = Object.fromEntries(serverFirst.split(',').map((a) => [a[0], a.slice(2)]))
    if (!f.r!.startsWith(this.cnonce)) throw new Error('server nonce does not extend ours')
    const salted = pbkdf2Sync(this.password, Buffer.from(f.s!, 'base64'), Number(f.i), 32, 'sha256')
    const mac = (k: Buffer, t: string) => createHmac('sha256', k).update(t).digest()
    const clientKey = mac(salted, 'Client Key')
    const storedKey = createHash('sha256').update(clientKey).digest()
    const withoutProof = `c=${Buffer.from(this.gs2).toString('base64')},r=${f.r}`
    this.#authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`
    const sig = mac(storedKey, this.#authMessage)
    const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]!))
    this.#serverKey = mac(salted, 'Server Key')
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`)
  }
  /** The server's v= proves it knows the password-derived ServerKey. */
  verifies(serverFinal: string): boolean {
    return serverFinal === `v=${createHmac('sha256', this.#serverKey).update(this.#authMessage).digest('base64')}`
  }
}

const users = new Map<string, ScramCredentials>([
  ['alice', scramCredentials('wonderland')],
  ['we,ird=name', scramCredentials('odd')],
])
const lookup = (u: string) => users.get(u)

/** Runs steps the way src/broker/handlers/auth.ts does: a fresh ctx per step, state carried over. */
function session(auth: ScramSha256Auth, o: { username?: string; reauth?: boolean } = {}) {
  let state: unknown
  return async (data: Buffer | string | undefined): Promise<AuthStep> => {
    const ctx: AuthContext = { clientId: 'c1', username: o.username, state, reauth: o.reauth ?? false }
    const r = await auth.step(ctx, typeof data === 'string' ? Buffer.from(data) : data)
    state = r.result === 'continue' ? ctx.state : undefined
    return r
  }
}

const text = (r: AuthStep) => (r.result === 'fail' ? '' : (r.data?.toString() ?? ''))

async function login(auth: ScramSha256Auth, c: Client, o: { username?: string; reauth?: boolean } = {}) {
  const step = session(auth, o)
  const first = await step(c.first())
  if (first.result !== 'continue') return { first, final: first }
  return { first, final: await step(c.final(text(first))) }
}

describe('RFC 7677 section 3 test vector', () => {
  const cnonce = 'rOprNGfwEbeRWgbNEkqO'
  const snonce = '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0'
  const cred = scramCredentials('pencil', { salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'), iterations: 4096 })
  const clientFinal = 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ='

  test('the server answers exactly as the RFC', async () => {
    const step = session(new ScramSha256Auth({ lookup: (u) => (u === 'user' ? cred : undefined), serverNonce: () => snonce }))
    const first = await step(`n,,n=user,r=${cnonce}`)
    expect(first.result).toBe('continue')
    expect(text(first)).toBe('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096')
    const final = await step(clientFinal)
    expect(final).toEqual({ result: 'success', data: Buffer.from('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='), username: 'user' })
  })

  test('the test client computes the RFC proof (it is a fair judge)', () => {
    const c = new Client('user', 'pencil', cnonce)
    expect(c.final('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096').toString()).toBe(clientFinal)
    expect(c.verifies('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).toBe(true)
  })
})

describe('full exchange', () => {
  const auth = new ScramSha256Auth({ lookup })

  test('right password: success carrying a server signature the client verifies', async () => {
    const c = new Client('alice', 'wonderland')
    const { first, final } = await login(auth, c, { username: 'alice' })
    expect(text(first)).toMatch(new RegExp(`^r=${c.cnonce.replace(/[+/]/g, '\\$&')}[^,]+,s=[A-Za-z0-9+/=]+,i=4096$`))
    expect(final.result).toBe('success')
    expect(c.verifies(text(final))).toBe(true)
  })

  test("usernames with ',' and '=' travel escaped; no CONNECT username is fine", async () => {
    const c = new Client('we,ird=name', 'odd')
    expect(c.first().toString()).toContain('n=we=2Cird=3Dname')
    expect((await login(auth, c)).final.result).toBe('success')
  })

  test("gs2 flag 'y' (client could bind, thinks we cannot) and a matching authzid are accepted", async () => {
    expect((await login(auth, new Client('alice', 'wonderland', undefined, 'y,,'))).final.result).toBe('success')
    expect((await login(auth, new Client('alice', 'wonderland', undefined, 'n,a=alice,'))).final.result).toBe('success')
  })

  test('passwords are normalized like SASLprep (NFKC): a compatibility ligature equals its letters', async () => {
    const nfkc = new ScramSha256Auth({ lookup: (u) => (u === 'bob' ? scramCredentials('\uFB01le') : undefined) })
    expect((await login(nfkc, new Client('bob', 'file'))).final.result).toBe('success')
  })

  test('credentials round-trip through the file format; weak iteration counts are refused', async () => {
    const line = encodeScramCredentials(scramCredentials('pw', { iterations: 5000 }))
    expect(line).toMatch(/^SCRAM-SHA-256\$5000:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$/)
    const viaFile = new ScramSha256Auth({ lookup: (u) => (u === 'bob' ? decodeScramCredentials(line) : undefined) })
    expect((await login(viaFile, new Client('bob', 'pw'))).final.result).toBe('success')
    expect(() => decodeScramCredentials('SCRAM-SHA-256$4096:abc$def:ghi')).toThrow(/expected SCRAM-SHA-256/)
    expect(() => scramCredentials('pw', { iterations: 1000 })).toThrow(/>= 4096/)
  })
})

describe('refusals', () => {
  const auth = new ScramSha256Auth({ lookup, secret: 'fake-salt-secret' })

  test('wrong password: the challenge comes, the final step fails with 0x86', async () => {
    const { first, final } = await login(auth, new Client('alice', 'looking-glass'))
    expect(first.result).toBe('continue')
    expect(final).toEqual({ result: 'fail', reason: 0x86 })
  })

  test('unknown user: a stable per-user fake salt, the same iteration count, fails only at the end with 0x86', async () => {
    const { first, final } = await login(auth, new Client('mallory', 'x'))
    expect(first.result).toBe('continue')
    const salt = (r: AuthStep) => /,s=([^,]+),i=(\d+)$/.exec(text(r))!.slice(1)
    const [s, i] = salt(first)
    expect(Buffer.from(s!, 'base64').length).toBe(users.get('alice')!.salt.length)
    expect(i).toBe('4096')
    expect(salt((await login(auth, new Client('mallory', 'y'))).first)[0]).toBe(s!)
    expect(salt((await login(auth, new Client('trudy', 'y'))).first)[0]).not.toBe(s!)
    expect(final).toEqual({ result: 'fail', reason: 0x86 })
  })

  test('a CONNECT username other than the SCRAM user fails 0x86; another authzid fails 0x87', async () => {
    expect((await login(auth, new Client('alice', 'wonderland'), { username: 'bob' })).first).toEqual({ result: 'fail', reason: 0x86 })
    expect((await login(auth, new Client('alice', 'wonderland', undefined, 'n,a=root,'))).first).toEqual({ result: 'fail', reason: 0x87 })
  })

  test("channel binding requested ('p=' gs2 flag) fails 0x8C", async () => {
    expect((await login(auth, new Client('alice', 'wonderland', undefined, 'p=tls-server-end-point,,'))).first).toEqual({ result: 'fail', reason: 0x8c })
  })

  test('malformed client-first messages fail 0x8C', async () => {
    const bad: (string | Buffer | undefined)[] = [
      undefined, '', 'hello', 'n,,', 'n,,r=abc', 'n,,n=alice', 'n,,n=alice,x=1', 'x,,n=alice,r=abc', 'n,,n=,r=abc',
      'n,,n=al=2Xice,r=abc', 'n,,n=alice,r=', 'n,,n=alice,r=a b', 'n,,m=ext,n=alice,r=abc', 'n,,n=alice,r=abc,junk',
      Buffer.from([0x6e, 0x2c, 0x2c, 0x6e, 0x3d, 0xff, 0x2c, 0x72, 0x3d, 0x61]), // invalid UTF-8
    ]
    for (const data of bad) expect(await session(auth)(data)).toEqual({ result: 'fail', reason: 0x8c })
  })

  test('malformed or mismatched client-final messages fail 0x8C', async () => {
    const c = new Client('alice', 'wonderland')
    const good = (serverFirst: string) => c.final(serverFirst).toString()
    const cases: ((f: string) => string)[] = [
      (f) => good(f).replace(/,p=.*/, ''), // no proof
      (f) => good(f).replace('c=biws', 'c=eSws'), // channel-binding echo of another gs2 header
      (f) => good(f).replace(/r=[^,]+/, `r=${c.cnonce}other`), // not our nonce
      (f) => good(f).replace(/p=.*/, 'p=AAAA'), // proof of the wrong length
      (f) => good(f).replace(/p=.*/, 'p=!!!!'), // not base64
      (f) => good(f).replace('c=biws,', ''), // attributes out of order
      () => c.first().toString(), // a second client-first
    ]
    for (const make of cases) {
      const step = session(auth)
      const first = await step(c.first())
      expect(await step(make(text(first)))).toEqual({ result: 'fail', reason: 0x8c })
    }
  })

  test('re-authentication: success, and every failure is 0x87 (valid in DISCONNECT)', async () => {
    const c = new Client('alice', 'wonderland')
    const ok = await login(auth, c, { username: 'alice', reauth: true })
    expect(ok.final.result).toBe('success')
    expect(c.verifies(text(ok.final))).toBe(true)
    expect((await login(auth, new Client('alice', 'nope'), { reauth: true })).final).toEqual({ result: 'fail', reason: 0x87 })
    expect(await session(auth, { reauth: true })('garbage')).toEqual({ result: 'fail', reason: 0x87 })
  })
})

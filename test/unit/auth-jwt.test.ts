/** JWT authenticator: keys generated at test time with jose, written as PEM/JWKS to a temp dir. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, exportSPKI, generateKeyPair, importPKCS8, SignJWT, UnsecuredJWT, type CryptoKey, type JWTPayload } from 'jose'
import { JwtAuth, looksLikeJwt, type JwtAuthOptions } from '../../src/auth/jwt.ts'
import type { AuthRequest, AuthResult } from '../../src/auth/types.ts'

const SECRET = 'a-shared-secret-of-at-least-32-bytes!'
/** A self-signed P-256 certificate and its key (the certificate is only a key container). */
const CERT = `-----BEGIN CERTIFICATE-----
MIIBiDCCAS+gAwIBAgIUGM7Y6ZLPfJOIuc5H+pSL78/kKSQwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOdm1xdHQtand0LXRlc3QwIBcNMjYxMTI1MTYzMjA4WhgPMjEy
NjExMDExNjMyMDhaMBkxFzAVBgNVBAMMDnZtcXR0LWp3dC10ZXN0MFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEZzHl6g+d3jrpE9ZqZK9zQQKAyItvYIDcvbRm3pxO
CAaVGcYCVM27+5hVNe4V6Tik6E7SY9t/p4NhlB29kusorKNTMFEwHQYDVR0OBBYE
FJE/YM0KUME1KS6JvfGEGaWf/LNvMB8GA1UdIwQYMBaAFJE/YM0KUME1KS6JvfGE
GaWf/LNvMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgLR08IsXZ
f2QGDMqE1rj/N35I2aG70I/NDBB5AVFwTroCIAFwMFbolTnVrZvHTRNC/9KV5fG7
VJbyGE5paplX3NS2
-----END CERTIFICATE-----
`
const CERT_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgT5MGTeOb7H3asLO6
Z60ITI7SxF6ORHlpqfC3QcReFCShRANCAARnMeXqD53eOukT1mpkr3NBAoDIi29g
gNy9tGbenE4IBpUZxgJUzbv7mFU17hXpOKToTtJj23+ng2GUHb2S6yis
-----END PRIVATE KEY-----
`

let dir: string
let rsa: CryptoKeyPair, es: CryptoKeyPair, jwksRsa: CryptoKeyPair, jwksEs: CryptoKeyPair
let certKey: CryptoKey
let rsaPem: string
const file = (name: string) => join(dir, name)

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vmqtt-jwt-'))
  rsa = await generateKeyPair('RS256', { extractable: true })
  es = await generateKeyPair('ES256', { extractable: true })
  jwksRsa = await generateKeyPair('RS256', { extractable: true })
  jwksEs = await generateKeyPair('ES256', { extractable: true })
  certKey = await importPKCS8(CERT_KEY, 'ES256')
  rsaPem = await exportSPKI(rsa.publicKey)
  writeFileSync(file('rsa.pem'), rsaPem)
  writeFileSync(file('es.pem'), await exportSPKI(es.publicKey))
  writeFileSync(file('cert.pem'), CERT)
  const keys = [{ ...(await exportJWK(jwksRsa.publicKey)), kid: 'k1' }, { ...(await exportJWK(jwksEs.publicKey)), kid: 'k2' }]
  writeFileSync(file('jwks.json'), JSON.stringify({ keys }))
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const now = () => Math.floor(Date.now() / 1000)

async function sign(key: CryptoKey | Uint8Array, alg: string, claims: JWTPayload = {}, header: { kid?: string } = {}): Promise<string> {
  return new SignJWT({ sub: 'alice', exp: now() + 3600, ...claims }).setProtectedHeader({ alg, ...header }).sign(key)
}
const hs = (claims: JWTPayload = {}) => sign(new TextEncoder().encode(SECRET), 'HS256', claims)

function req(password: string | undefined, username?: string): AuthRequest {
  return { clientId: 'c1', username, password: password === undefined ? undefined : Buffer.from(password), address: '127.0.0.1', listener: 'mqtt', cert: undefined }
}

/** Authenticates and checks the audit detail never repeats the token. */
async function run(auth: JwtAuth, token: string | undefined, username?: string): Promise<AuthResult> {
  const r = await auth.authenticate(req(token, username))
  if (token !== undefined && r.detail !== undefined) expect(r.detail).not.toContain(token)
  return r
}

async function expectDeny(auth: JwtAuth, token: string, detail: RegExp, username?: string) {
  const r = await run(auth, token, username)
  expect(r.decision).toBe('deny')
  expect(r.reason).toBe(0x86)
  expect(r.detail).toMatch(detail)
}

const create = (o: JwtAuthOptions) => JwtAuth.create(o)

describe('valid tokens', () => {
  test('HS256 with the shared secret: allow, username from sub', async () => {
    const r = await run(await create({ secret: SECRET }), await hs())
    expect(r).toMatchObject({ decision: 'allow', username: 'alice' })
    expect(r.acl).toBeUndefined()
  })

  test('RS256 and ES256 with a PEM public key; ES256 with an X.509 certificate', async () => {
    expect((await run(await create({ publicKey: file('rsa.pem') }), await sign(rsa.privateKey, 'RS256'))).decision).toBe('allow')
    expect((await run(await create({ publicKey: file('es.pem') }), await sign(es.privateKey, 'ES256'))).decision).toBe('allow')
    expect((await run(await create({ publicKey: file('cert.pem') }), await sign(certKey, 'ES256'))).decision).toBe('allow')
  })

  test('JWKS: the key is chosen by kid; an unknown kid is denied', async () => {
    const auth = await create({ jwksFile: file('jwks.json') })
    expect((await run(auth, await sign(jwksRsa.privateKey, 'RS256', {}, { kid: 'k1' }))).decision).toBe('allow')
    expect((await run(auth, await sign(jwksEs.privateKey, 'ES256', {}, { kid: 'k2' }))).decision).toBe('allow')
    await expectDeny(auth, await sign(jwksEs.privateKey, 'ES256', {}, { kid: 'k1' }), /no JWKS key/)
    await expectDeny(auth, await sign(jwksRsa.privateKey, 'RS256', {}, { kid: 'nope' }), /no JWKS key/)
    // a right kid with another key's signature
    await expectDeny(auth, await sign(rsa.privateKey, 'RS256', {}, { kid: 'k1' }), /signature/)
  })

  test('issuer and audience, when configured and matching', async () => {
    const auth = await create({ secret: SECRET, issuer: 'https://idp.example', audience: ['mqtt', 'other'] })
    expect((await run(auth, await hs({ iss: 'https://idp.example', aud: 'mqtt' }))).decision).toBe('allow')
  })
})

describe('verification failures deny with 0x86 and say which check failed', () => {
  test('expired, beyond the clock tolerance; within it is accepted', async () => {
    const auth = await create({ secret: SECRET })
    await expectDeny(auth, await hs({ exp: now() - 60 }), /expired \(exp\)/)
    expect((await run(auth, await hs({ exp: now() - 2 }))).decision).toBe('allow')
    const strict = await create({ secret: SECRET, clockTolerance: 0 })
    await expectDeny(strict, await hs({ exp: now() - 2 }), /exp/)
  })

  test('nbf in the future', async () => {
    await expectDeny(await create({ secret: SECRET }), await hs({ nbf: now() + 120 }), /not yet valid \(nbf\)/)
  })

  test('wrong issuer, wrong or missing audience', async () => {
    const auth = await create({ secret: SECRET, issuer: 'https://idp.example', audience: 'mqtt' })
    await expectDeny(auth, await hs({ iss: 'https://evil.example', aud: 'mqtt' }), /issuer \(iss\)/)
    await expectDeny(auth, await hs({ iss: 'https://idp.example', aud: 'web' }), /audience \(aud\)/)
    await expectDeny(auth, await hs({ iss: 'https://idp.example' }), /aud/)
  })

  test('bad signature: another key, or a tampered payload', async () => {
    await expectDeny(await create({ publicKey: file('rsa.pem') }), await sign(jwksRsa.privateKey, 'RS256'), /signature verification failed/)
    const [h, , s] = (await hs()).split('.')
    const forged = Buffer.from(JSON.stringify({ sub: 'root', exp: now() + 3600 })).toString('base64url')
    await expectDeny(await create({ secret: SECRET }), `${h}.${forged}.${s}`, /signature verification failed/)
  })

  test('algorithm confusion: HS256 "signed" with the RSA public key PEM is denied', async () => {
    const confused = await sign(new TextEncoder().encode(rsaPem), 'HS256')
    await expectDeny(await create({ publicKey: file('rsa.pem') }), confused, /algorithm not allowed/)
    // with a secret configured too, HS256 only ever meets the secret
    await expectDeny(await create({ publicKey: file('rsa.pem'), secret: SECRET }), confused, /signature verification failed/)
    await expectDeny(await create({ jwksFile: file('jwks.json') }), await sign(new TextEncoder().encode(rsaPem), 'HS256', {}, { kid: 'k1' }), /algorithm not allowed/)
  })

  test('an asymmetric algorithm the key type does not allow (ES256 token, RSA key) is denied', async () => {
    await expectDeny(await create({ publicKey: file('rsa.pem') }), await sign(es.privateKey, 'ES256'), /algorithm not allowed/)
  })

  test("alg 'none' is denied, not deferred", async () => {
    const none = new UnsecuredJWT({ sub: 'alice', exp: now() + 3600 }).encode()
    expect(looksLikeJwt(none)).toBe(true)
    await expectDeny(await create({ secret: SECRET }), none, /algorithm not allowed/)
    await expectDeny(await create({ publicKey: file('rsa.pem') }), none, /algorithm not allowed/)
  })

  test('HS512 needs a 64-byte secret (RFC 7518 3.2)', async () => {
    const auth = await create({ secret: SECRET })
    expect(auth.algorithms).toEqual(['HS256'])
    await expectDeny(auth, await sign(new TextEncoder().encode(SECRET), 'HS512'), /algorithm not allowed/)
    const long = SECRET.repeat(2)
    expect((await run(await create({ secret: long }), await sign(new TextEncoder().encode(long), 'HS512'))).decision).toBe('allow')
  })

  test('a token without exp is denied unless requireExp is false', async () => {
    const noExp = await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET))
    await expectDeny(await create({ secret: SECRET }), noExp, /claim exp missing/)
    expect((await run(await create({ secret: SECRET, requireExp: false }), noExp)).decision).toBe('allow')
  })
})

describe('passwords that are not JWTs defer to the next authenticator', () => {
  test('no password, a plain password, dotted text whose header is not JSON', async () => {
    const auth = await create({ secret: SECRET })
    for (const p of [undefined, 'hunter2', 'a.b.c', 'e30.e30.sig', '', 'x.y']) {
      expect((await run(auth, p, 'alice')).decision).toBe('defer')
    }
  })
})

describe('username claim', () => {
  test('the claim becomes the username; a different CONNECT username is denied', async () => {
    const auth = await create({ secret: SECRET })
    expect((await run(auth, await hs(), 'alice')).username).toBe('alice')
    await expectDeny(auth, await hs(), /CONNECT username differs from claim sub/, 'mallory')
  })

  test('a token without the claim is denied (the client must not pick its username); a custom claim; a non-string claim is denied', async () => {
    const auth = await create({ secret: SECRET })
    await expectDeny(auth, await hs({ sub: undefined }), /no sub claim/)
    const custom = await create({ secret: SECRET, usernameClaim: 'preferred_username' })
    expect((await run(custom, await hs({ preferred_username: 'carol' }))).username).toBe('carol')
    await expectDeny(custom, await hs({ preferred_username: 42 }), /not a non-empty string/)
  })
})

describe('ACL claim: {"publish": [...], "subscribe": [...]}', () => {
  test('maps to ClientAcl; a missing list is empty', async () => {
    const auth = await create({ secret: SECRET })
    const r = await run(auth, await hs({ acl: { publish: ['devices/alice/#'], subscribe: ['cmd/alice/+', 'broadcast'] } }))
    expect(r.acl).toEqual({ publish: ['devices/alice/#'], subscribe: ['cmd/alice/+', 'broadcast'] })
    expect((await run(auth, await hs({ acl: { subscribe: ['x'] } }))).acl).toEqual({ publish: [], subscribe: ['x'] })
    const custom = await create({ secret: SECRET, aclClaim: 'mqtt' })
    expect((await run(custom, await hs({ mqtt: { publish: ['a'] } }))).acl).toEqual({ publish: ['a'], subscribe: [] })
  })

  test('other shapes and invalid filters are denied', async () => {
    const auth = await create({ secret: SECRET })
    await expectDeny(auth, await hs({ acl: { pub: ['a'] } }), /unknown key "pub"/)
    await expectDeny(auth, await hs({ acl: ['a/#'] }), /must be an object/)
    await expectDeny(auth, await hs({ acl: { publish: 'a/#' } }), /array of topic filters/)
    await expectDeny(auth, await hs({ acl: { subscribe: ['a/#/b'] } }), /'#' must be alone/)
  })
})

describe('key files', () => {
  test('construction fails naming the file and the problem', async () => {
    await expect(create({})).rejects.toThrow(/at least one of/)
    await expect(create({ secret: 'short' })).rejects.toThrow(/32 bytes/)
    await expect(create({ publicKey: file('missing.pem') })).rejects.toThrow(`cannot read public key file ${file('missing.pem')}`)
    writeFileSync(file('garbage.pem'), 'not a key')
    await expect(create({ publicKey: file('garbage.pem') })).rejects.toThrow(`invalid public key file ${file('garbage.pem')}: no PEM block`)
    writeFileSync(file('private.pem'), CERT_KEY)
    await expect(create({ publicKey: file('private.pem') })).rejects.toThrow(/private\.pem: holds a private key/)
    writeFileSync(file('bad.json'), '{"keys": [')
    await expect(create({ jwksFile: file('bad.json') })).rejects.toThrow(`invalid JWKS file ${file('bad.json')}`)
    writeFileSync(file('oct.json'), JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 's' }] }))
    await expect(create({ jwksFile: file('oct.json') })).rejects.toThrow(/oct\.json: key 0 \(kid s\): holds private or symmetric/)
  })

  test('reload with a bad file keeps the old keys and throws naming it; a good file replaces them', async () => {
    writeFileSync(file('live.pem'), rsaPem)
    const auth = await create({ publicKey: file('live.pem') })
    const oldToken = await sign(rsa.privateKey, 'RS256')
    writeFileSync(file('live.pem'), '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n')
    await expect(auth.reload()).rejects.toThrow(`invalid public key file ${file('live.pem')}`)
    expect((await run(auth, oldToken)).decision).toBe('allow')
    writeFileSync(file('live.pem'), await exportSPKI(es.publicKey))
    await auth.reload()
    await expectDeny(auth, oldToken, /algorithm not allowed/)
    expect((await run(auth, await sign(es.privateKey, 'ES256'))).decision).toBe('allow')
  })
})

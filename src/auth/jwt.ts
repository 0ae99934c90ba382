/**
 * JWT authenticator: the token travels in the CONNECT password field (UTF-8). Keys come from a
 * shared secret (HS*), a PEM public key or certificate (RS*, PS*, ES*, EdDSA) and/or a local
 * JWKS file (chosen by `kid`). Each key only ever verifies the algorithms its type allows, so
 * 'none' and algorithm confusion (an HS* token "signed" with a public key) cannot pass.
 */
import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createLocalJWKSet, errors, importJWK, jwtVerify, type JSONWebKeySet, type JWK, type JWTHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { topicFilterError } from '../topic/validate.ts'
import type { AuthRequest, AuthResult, Authenticator, ClientAcl } from './types.ts'

export interface JwtAuthOptions {
  /** Shared secret for HS256/384/512 (UTF-8, at least 32 bytes; HS384/HS512 need 48/64). */
  secret?: string
  /** Path to a PEM file: an SPKI public key ("PUBLIC KEY") or an X.509 certificate. */
  publicKey?: string
  /** Path to a local JWKS JSON file ({"keys": [...]}, public keys only); chosen by `kid`. */
  jwksFile?: string
  /** Accepted `iss` value(s); unchecked when absent. */
  issuer?: string | string[]
  /** Accepted `aud` value(s); unchecked when absent. */
  audience?: string | string[]
  /** Claim that names the user (default 'sub'). */
  usernameClaim?: string
  /** Claim that holds the per-connection ACL (default 'acl'): {"publish": [...], "subscribe": [...]}. */
  aclClaim?: string
  /** Allowed clock skew for exp/nbf, in seconds (default 5). */
  clockTolerance?: number
  /** Refuse tokens without `exp` (default true: a token without expiry is valid forever). */
  requireExp?: boolean
}

interface KeySet {
  secret: Uint8Array | undefined
  secretAlgs: string[]
  publicKey: { key: KeyObject; algs: string[] } | undefined
  jwks: { get: JWTVerifyGetKey; algs: string[] } | undefined
  algorithms: string[]
}

const DENY = 0x86 // Bad User Name or Password: the credential (the token) is not accepted
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
const RSA = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']
const PSS = ['PS256', 'PS384', 'PS512']
const EC: Record<string, string> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' }
const NODE_CURVE: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' }
const ED = ['EdDSA', 'Ed25519']

/** Algorithms a public key may verify, by its type; throws for what WebCrypto/jose cannot use. */
function algsOfKeyObject(key: KeyObject): string[] {
  const type = key.asymmetricKeyType
  if (type === 'rsa' || type === 'rsa-pss') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < 2048) throw new Error(`RSA key of ${bits} bits is too short (at least 2048)`)
    return type === 'rsa' ? RSA : PSS
  }
  if (type === 'ec') {
    const alg = EC[NODE_CURVE[key.asymmetricKeyDetails?.namedCurve ?? ''] ?? '']
    if (alg === undefined) throw new Error(`unsupported EC curve ${key.asymmetricKeyDetails?.namedCurve}`)
    return [alg]
  }
  if (type === 'ed25519') return ED
  throw new Error(`unsupported key type ${type}`)
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (e) {
    throw new Error(`jwt: cannot read ${what} ${file}: ${(e as Error).message}`)
  }
}

function loadPublicKey(file: string): { key: KeyObject; algs: string[] } {
  const pem = readText(file, 'public key file')
  try {
    const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1]
    if (label === undefined) throw new Error('no PEM block (expected PUBLIC KEY or CERTIFICATE)')
    if (label.includes('PRIVATE')) throw new Error('holds a private key; give the public key or a certificate')
    let key: KeyObject
    if (label === 'CERTIFICATE') key = new X509Certificate(pem).publicKey
    else if (label === 'PUBLIC KEY' || label === 'RSA PUBLIC KEY') key = createPublicKey(pem)
    else throw new Error(`unexpected PEM block ${label} (expected PUBLIC KEY or CERTIFICATE)`)
    return { key, algs: algsOfKeyObject(key) }
  } catch (e) {
    throw new Error(`jwt: invalid public key file ${file}: ${(e as Error).message}`)
  }
}

function algsOfJwk(jwk: JWK): string[] {
  if (jwk.d !== undefined || jwk.kty === 'oct') throw new Error('holds private or symmetric key material (use the secret option for HS*)')
  let algs: string[]
  if (jwk.kty === 'RSA') algs = RSA
  else if (jwk.kty === 'EC' && EC[jwk.crv ?? ''] !== undefined) algs = [EC[jwk.crv!]!]
  else if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') algs = ED
  else throw new Error(`unsupported key type ${jwk.kty}${jwk.crv ? ` ${jwk.crv}` : ''}`)
  if (jwk.alg === undefined) return algs
  if (!algs.includes(jwk.alg)) throw new Error(`alg ${jwk.alg} does not fit key type ${jwk.kty}`)
  return [jwk.alg]
}

async function loadJwks(file: string): Promise<{ get: JWTVerifyGetKey; algs: string[] }> {
  const text = readText(file, 'JWKS file')
  try {
    const jwks = JSON.parse(text) as JSONWebKeySet
    if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) throw new Error('expected {"keys": [...]} with at least one key')
    const algs = new Set<string>()
    for (const [i, jwk] of jwks.keys.entries()) {
      try {
        const fit = algsOfJwk(jwk)
        await importJWK(jwk, fit[0]) // proves the key material is usable now, not at the first CONNECT
        for (const a of fit) algs.add(a)
      } catch (e) {
        throw new Error(`key ${i}${jwk?.kid !== undefined ? ` (kid ${jwk.kid})` : ''}: ${(e as Error).message}`)
      }
    }
    return { get: createLocalJWKSet(jwks), algs: [...algs] }
  } catch (e) {
    throw new Error(`jwt: invalid JWKS file ${file}: ${(e as Error).message}`)
  }
}

/** RFC 7518 3.2: an HMAC key is at least as long as the hash output. */
function secretAlgs(secret: Uint8Array): string[] {
  if (secret.length < 32) throw new Error('jwt: secret is shorter than 32 bytes (HS256 needs at least 256 bits)')
  return [['HS256', 32], ['HS384', 48], ['HS512', 64]].filter(([, n]) => secret.length >= (n as number)).map(([a]) => a as string)
}

async function loadKeys(opts: JwtAuthOptions): Promise<KeySet> {
  const secret = opts.secret === undefined ? undefined : new TextEncoder().encode(opts.secret)
  const hs = secret === undefined ? [] : secretAlgs(secret)
  const publicKey = opts.publicKey === undefined ? undefined : loadPublicKey(opts.publicKey)
  const jwks = opts.jwksFile === undefined ? undefined : await loadJwks(opts.jwksFile)
  const algorithms = [...new Set([...hs, ...(publicKey?.algs ?? []), ...(jwks?.algs ?? [])])]
  return { secret, secretAlgs: hs, publicKey, jwks, algorithms }
}

/** Three base64url parts whose first one decodes to a JSON header with an "alg". */
export function looksLikeJwt(s: string): boolean {
  if (!JWT_SHAPE.test(s)) return false
  try {
    const header: unknown = JSON.parse(Buffer.from(s.slice(0, s.indexOf('.')), 'base64url').toString('utf8'))
    return typeof header === 'object' && header !== null && typeof (header as { alg?: unknown }).alg === 'string'
  } catch {
    return false
  }
}

class NoKeyError extends Error {}

/** Which jose check failed, in words for the audit log (never the token). */
function whichCheckFailed(e: unknown): string {
  const err = e as { code?: string; claim?: string; reason?: string; message?: string }
  switch (err.code) {
    case errors.JWTExpired.code: return 'token expired (exp)'
    case errors.JWTClaimValidationFailed.code:
      if (err.claim === 'nbf') return 'token not yet valid (nbf)'
      if (err.claim === 'iss') return 'issuer (iss) not accepted'
      if (err.claim === 'aud') return 'audience (aud) not accepted'
      return `claim ${err.claim} ${err.reason === 'missing' ? 'missing' : 'invalid'}`
    case errors.JWSSignatureVerificationFailed.code: return 'signature verification failed'
    case errors.JOSEAlgNotAllowed.code: return 'algorithm not allowed for the configured keys'
    case errors.JWKSNoMatchingKey.code: return 'no JWKS key matches the token kid/alg'
    case errors.JWKSMultipleMatchingKeys.code: return 'several JWKS keys match; the token needs a kid'
    case errors.JWSInvalid.code: case errors.JWTInvalid.code: return `malformed token: ${err.message}`
  }
  if (e instanceof NoKeyError) return e.message
  return `verification failed: ${err.message}`
}

/** Converts the ACL claim; only {"publish"?: string[], "subscribe"?: string[]} is accepted. */
export function aclFromClaim(value: unknown): ClientAcl | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'must be an object {"publish": [...], "subscribe": [...]}'
  const acl: ClientAcl = { publish: [], subscribe: [] }
  for (const [k, v] of Object.entries(value)) {
    if (k !== 'publish' && k !== 'subscribe') return `unknown key "${k}" (only "publish" and "subscribe")`
    if (!Array.isArray(v) || !v.every((f) => typeof f === 'string')) return `"${k}" must be an array of topic filters`
    for (const f of v as string[]) {
      const bad = topicFilterError(f, { maxLength: 65535, maxLevels: Number.MAX_SAFE_INTEGER })
      if (bad !== null) return `"${k}" filter ${JSON.stringify(f)}: ${bad}`
    }
    acl[k] = [...(v as string[])]
  }
  return acl
}

export class JwtAuth implements Authenticator {
  readonly name = 'jwt'
  readonly #opts: JwtAuthOptions
  #keys: KeySet

  private constructor(opts: JwtAuthOptions, keys: KeySet) {
    this.#opts = opts
    this.#keys = keys
  }

  /** Loads the keys (jose imports keys asynchronously); throws naming the file that is invalid. */
  static async create(opts: JwtAuthOptions): Promise<JwtAuth> {
    if (opts.secret === undefined && opts.publicKey === undefined && opts.jwksFile === undefined) {
      throw new Error('jwt: configure at least one of secret, publicKey, jwksFile')
    }
    return new JwtAuth({ ...opts }, await loadKeys(opts))
  }

  /** Re-reads the key files; on error the old keys stay in use and the error names the file. */
  async reload(): Promise<void> {
    this.#keys = await loadKeys(this.#opts)
  }

  /** Algorithms a token may use with the current keys. */
  get algorithms(): readonly string[] {
    return this.#keys.algorithms
  }

  async authenticate(req: AuthRequest): Promise<AuthResult> {
    if (req.password === undefined) return { decision: 'defer' }
    const token = req.password.toString('utf8')
    if (!looksLikeJwt(token)) return { decision: 'defer' }
    const keys = this.#keys
    let payload: JWTPayload
    let header: JWTHeaderParameters
    try {
      ;({ payload, protectedHeader: header } = await jwtVerify(token, (h, t) => pickKey(keys, h, t), {
        algorithms: keys.algorithms,
        issuer: this.#opts.issuer,
        audience: this.#opts.audience,
        clockTolerance: this.#opts.clockTolerance ?? 5,
        requiredClaims: this.#opts.requireExp === false ? [] : ['exp'],
      }))
    } catch (e) {
      return deny(whichCheckFailed(e))
    }
    const claim = this.#opts.usernameClaim ?? 'sub'
    // the token names the user: without the claim, a client could pick any username it likes
    // (and match user: ACL rules) with a token issued for something else
    const named = payload[claim]
    if (named === undefined) return deny(`token has no ${claim} claim`)
    if (typeof named !== 'string' || named.length === 0) return deny(`claim ${claim} is not a non-empty string`)
    if (req.username !== undefined && req.username !== named) return deny(`CONNECT username differs from claim ${claim}`)
    const username = named
    const result: AuthResult = { decision: 'allow', username, detail: `jwt ${header.alg}${header.kid !== undefined ? ` kid ${header.kid}` : ''}` }
    if (typeof payload.exp === 'number') result.expiresAt = payload.exp * 1000
    const aclClaim = this.#opts.aclClaim ?? 'acl'
    if (payload[aclClaim] !== undefined) {
      const acl = aclFromClaim(payload[aclClaim])
      if (typeof acl === 'string') return deny(`claim ${aclClaim} ${acl}`)
      result.acl = acl
    }
    return result
  }
}

function deny(detail: string): AuthResult {
  return { decision: 'deny', reason: DENY, detail: `jwt: ${detail}` }
}

/** HS* only ever meets the secret; asymmetric algorithms only the keys whose type allows them. */
function pickKey(keys: KeySet, header: JWTHeaderParameters, token: Parameters<JWTVerifyGetKey>[1]) {
  const alg = header.alg
  if (keys.secretAlgs.includes(alg)) return keys.secret!
  if (alg.startsWith('HS')) throw new NoKeyError(`no secret for ${alg}`)
  const pk = keys.publicKey !== undefined && keys.publicKey.algs.includes(alg) ? keys.publicKey.key : undefined
  if (pk !== undefined && (header.kid === undefined || keys.jwks === undefined)) return pk
  if (keys.jwks !== undefined && keys.jwks.algs.includes(alg)) return keys.jwks.get(header, token)
  if (pk !== undefined) return pk
  throw new NoKeyError(`no key for algorithm ${alg}`)
}

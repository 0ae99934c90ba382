/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as the MQTT 5 enhanced-authentication method
 * 'SCRAM-SHA-256' (spec 4.12), server side:
 *
 *   CONNECT  auth data: client-first  n,,n=user,r=cnonce
 *   AUTH 0x18 (server): server-first  r=cnonce+snonce,s=salt,i=iterations
 *   AUTH 0x18 (client): client-final  c=biws,r=cnonce+snonce,p=proof
 *   CONNACK 0x00 auth data: server-final  v=signature        (or AUTH 0x00 on re-authentication)
 *
 * Reason codes on CONNECT: 0x86 Bad User Name or Password when the credentials are not accepted
 * (wrong proof, unknown user, a CONNECT username other than the SCRAM one), 0x87 Not authorized
 * for an authorization identity other than the user, 0x8C Bad authentication method when the
 * data does not follow SCRAM-SHA-256 as offered here (malformed, channel binding requested,
 * mandatory extension, wrong nonce or channel-binding echo). On re-authentication the failure
 * ends in DISCONNECT, which has no 0x86 or 0x8C (spec 3.14.2.1), so every failure is 0x87 there.
 * Unknown users get a salt derived from their name and a server secret, and fail only at the
 * final step, exactly like a wrong password.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto'
import type { AuthContext, AuthStep, EnhancedAuth } from '../broker/auth-hooks.ts'

export const SCRAM_SHA_256 = 'SCRAM-SHA-256'

/** What the server stores per user (RFC 5802 section 3); never the password. */
export interface ScramCredentials {
  salt: Buffer
  iterations: number
  storedKey: Buffer
  serverKey: Buffer
}

export type ScramLookup = (username: string) => ScramCredentials | undefined | Promise<ScramCredentials | undefined>

export interface ScramAuthOptions {
  /** Returns the user's credentials, or undefined for an unknown user. A throw closes the connection (0x80). */
  lookup: ScramLookup
  /** Secret for unknown users' fake salts; default random per process (set it to keep them stable across restarts). */
  secret?: Buffer | string
  /** Iteration count shown to unknown users (default 4096): use the one your credentials use. */
  fakeIterations?: number
  /** Server nonce source (tests); default 18 random bytes in base64. */
  serverNonce?: () => string
}

const BAD_CREDENTIALS = 0x86
const NOT_AUTHORIZED = 0x87
const BAD_METHOD = 0x8c
const MIN_ITERATIONS = 4096 // RFC 7677 section 4
const NONCE = /^[\x21-\x2b\x2d-\x7e]{1,1024}$/ // printable ASCII except ','
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
const ATTR = /^[A-Za-z]=/

const hmac = (key: Buffer, text: string | Buffer) => createHmac('sha256', key).update(text).digest()
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest()

/** SaltedPassword, ClientKey, StoredKey, ServerKey for a password (Hi() is PBKDF2-HMAC-SHA-256). */
export function scramCredentials(password: string, opts: { salt?: Buffer; iterations?: number } = {}): ScramCredentials {
  const iterations = opts.iterations ?? MIN_ITERATIONS
  if (!Number.isInteger(iterations) || iterations < MIN_ITERATIONS) throw new Error(`scram: iterations must be an integer >= ${MIN_ITERATIONS}`)
  const salt = opts.salt ?? randomBytes(16)
  // SASLprep (RFC 4013) approximated by NFKC; ASCII passwords are unchanged
  const salted = pbkdf2Sync(Buffer.from(password.normalize('NFKC'), 'utf8'), salt, iterations, 32, 'sha256')
  return { salt, iterations, storedKey: sha256(hmac(salted, 'Client Key')), serverKey: hmac(salted, 'Server Key') }
}

/** One line for a credentials file, PostgreSQL's format: SCRAM-SHA-256$iter:salt$StoredKey:ServerKey (base64). */
export function encodeScramCredentials(c: ScramCredentials): string {
  return `${SCRAM_SHA_256}$${c.iterations}:${c.salt.toString('base64')}$${c.storedKey.toString('base64')}:${c.serverKey.toString('base64')}`
}

/** Parses encodeScramCredentials' format; throws on anything else. */
export function decodeScramCredentials(s: string): ScramCredentials {
  const m = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(s.trim())
  const parts = m?.slice(2).map((p) => (BASE64.test(p) ? Buffer.from(p, 'base64') : undefined))
  if (m === null || parts === undefined || parts.some((p) => p === undefined) || parts[1]!.length !== 32 || parts[2]!.length !== 32 || parts[0]!.length === 0) {
    throw new Error('scram: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64, 32-byte keys)')
  }
  return { iterations: Number(m[1]), salt: parts[0]!, storedKey: parts[1]!, serverKey: parts[2]! }
}

/** Between server-first and client-final. */
class Pending {
  constructor(
    readonly gs2Header: string,
    readonly clientFirstBare: string,
    readonly serverFirst: string,
    readonly nonce: string,
    readonly credentials: ScramCredentials | undefined,
    readonly user: string,
  ) {}
}

/** saslname: ',' and '=' travel as '=2C' and '=3D'; any other '=' is malformed. */
function saslName(s: string): string | undefined {
  if (s.length === 0 || /=(?!2C|3D)/.test(s)) return undefined
  return s.replaceAll('=2C', ',').replaceAll('=3D', '=')
}

/** Strict UTF-8: text that does not survive the round trip is malformed. */
function utf8(data: Buffer | undefined): string | undefined {
  if (data === undefined || data.length === 0) return undefined
  const text = data.toString('utf8')
  return Buffer.from(text, 'utf8').equals(data) ? text : undefined
}

export class ScramSha256Auth implements EnhancedAuth {
  readonly method = SCRAM_SHA_256
  readonly #lookup: ScramLookup
  readonly #secret: Buffer
  readonly #fakeIterations: number
  readonly #serverNonce: () => string

  constructor(opts: ScramAuthOptions) {
    this.#lookup = opts.lookup
    this.#secret = opts.secret === undefined ? randomBytes(32) : Buffer.from(opts.secret)
    this.#fakeIterations = opts.fakeIterations ?? MIN_ITERATIONS
    this.#serverNonce = opts.serverNonce ?? (() => randomBytes(18).toString('base64'))
  }

  async step(ctx: AuthContext, data: Buffer | undefined): Promise<AuthStep> {
    const pending = ctx.state instanceof Pending ? ctx.state : undefined
    ctx.state = undefined
    const fail = (reason: number): AuthStep => ({ result: 'fail', reason: ctx.reauth ? NOT_AUTHORIZED : reason })
    const text = utf8(data)
    if (text === undefined) return fail(BAD_METHOD)
    if (pending === undefined) return this.#first(ctx, text, fail)
    return this.#final(pending, text, fail)
  }

  async #first(ctx: AuthContext, text: string, fail: (reason: number) => AuthStep): Promise<AuthStep> {
    // gs2-header: gs2-cbind-flag "," [authzid] ","
    const m = /^(n|y|p=[A-Za-z0-9.-]+),(a=[^,]*)?,/.exec(text)
    if (m === null) return fail(BAD_METHOD)
    // 'p=' asks for channel binding (SCRAM-SHA-256-PLUS), which this method does not offer;
    // 'y' (client could bind but thinks we cannot) is correct here since we cannot
    if (m[1]!.startsWith('p=')) return fail(BAD_METHOD)
    const bare = text.slice(m[0].length)
    const attrs = bare.split(',')
    // a leading 'm=' (mandatory extension, none defined) fails here too
    if (!attrs[0]!.startsWith('n=') || !attrs[1]?.startsWith('r=') || !attrs.slice(2).every((a) => ATTR.test(a))) return fail(BAD_METHOD)
    const user = saslName(attrs[0]!.slice(2))
    const cnonce = attrs[1]!.slice(2)
    if (user === undefined || !NONCE.test(cnonce)) return fail(BAD_METHOD)
    if (m[2] !== undefined && saslName(m[2].slice(2)) !== user) return fail(NOT_AUTHORIZED) // acting as another identity
    // the connection keeps the CONNECT username, so it must name the same user
    if (ctx.username !== undefined && ctx.username !== user) return fail(BAD_CREDENTIALS)
    const credentials = await this.#lookup(user)
    const salt = credentials?.salt ?? hmac(this.#secret, `scram-fake-salt:${user}`).subarray(0, 16)
    const nonce = cnonce + this.#serverNonce()
    const serverFirst = `r=${nonce},s=${salt.toString('base64')},i=${credentials?.iterations ?? this.#fakeIterations}`
    ctx.state = new Pending(m[0], bare, serverFirst, nonce, credentials, user)
    return { result: 'continue', data: Buffer.from(serverFirst) }
  }

  #final(p: Pending, text: string, fail: (reason: number) => AuthStep): AuthStep {
    const at = text.lastIndexOf(',p=')
    if (at < 0) return fail(BAD_METHOD)
    const withoutProof = text.slice(0, at)
    const proofB64 = text.slice(at + 3)
    const attrs = withoutProof.split(',')
    if (!attrs[0]!.startsWith('c=') || !attrs[1]?.startsWith('r=') || !attrs.slice(2).every((a) => ATTR.test(a))) return fail(BAD_METHOD)
    // the channel-binding echo is the gs2 header as sent (no binding data), the nonce is ours
    if (attrs[0] !== `c=${Buffer.from(p.gs2Header).toString('base64')}`) return fail(BAD_METHOD)
    if (attrs[1] !== `r=${p.nonce}`) return fail(BAD_METHOD)
    if (!BASE64.test(proofB64)) return fail(BAD_METHOD)
    const proof = Buffer.from(proofB64, 'base64')
    if (proof.length !== 32) return fail(BAD_METHOD)
    const authMessage = `${p.clientFirstBare},${p.serverFirst},${withoutProof}`
    // an unknown user runs the same computation against a key nobody has
    const storedKey = p.credentials?.storedKey ?? randomBytes(32)
    const signature = hmac(storedKey, authMessage)
    const clientKey = Buffer.alloc(32)
    for (let i = 0; i < 32; i++) clientKey[i] = proof[i]! ^ signature[i]!
    if (!timingSafeEqual(sha256(clientKey), storedKey) || p.credentials === undefined) return fail(BAD_CREDENTIALS)
    return { result: 'success', data: Buffer.from(`v=${hmac(p.credentials.serverKey, authMessage).toString('base64')}`), username: p.user }
  }
}

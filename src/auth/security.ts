import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Config } from '../config/schema.ts'
import type { Logger } from '../log.ts'
import { AclFile, authorizeClientAcl } from './acl.ts'
import { AuditLog } from './audit.ts'
import { certIdentity } from './cert-identity.ts'
import { JwtAuth } from './jwt.ts'
import { LoginGate, type LoginTurn } from './login-gate.ts'
import { parseScramFile, PasswordFileAuthenticator } from './password-file.ts'
import { SCRAM_SHA_256, ScramSha256Auth, type ScramCredentials } from './scram.ts'
import type { AclAction, AuthRequest, AuthResult, Authenticator, ClientAcl } from './types.ts'
import { VerifyPool } from './verify-pool.ts'

const BAD_CREDENTIALS = 0x86
const NOT_AUTHORIZED = 0x87
export { addressKey } from './login-gate.ts'

/** Who is asking, for ACL checks (a connection satisfies it). */
export interface Principal {
  clientId: string
  username: string | undefined
  /** Per-connection topic lists from a token; replace the rules file for this client. */
  acl: ClientAcl | null
  socket: { readonly remoteAddress: string }
}

/**
 * Authentication chain (certificate identity, password file, JWT: first decisive answer
 * wins), the anonymous policy, failed-login delays per address, the ACL, and the audit log.
 */
export class Security {
  readonly authenticators: Authenticator[]
  readonly anonymous: boolean
  readonly acl: AclFile | null
  readonly audit: AuditLog
  readonly scram: ScramSha256Auth | null
  #scramFile: string
  #scramUsers = new Map<string, ScramCredentials>()
  /** Failed-login delays and the order of checks per address and username. */
  readonly #gate: LoginGate
  /** The cap on concurrent password verifications. */
  readonly pool: VerifyPool
  /** Called after the ACL rules changed (file change, SIGHUP, admin API). */
  onAclReload: (() => void) | null = null
  /** Called with the users a re-read of the password file removed (file change, SIGHUP, admin API). */
  onUsersRemoved: ((users: string[]) => void) | null = null
  /** Counts ACL rule changes: decisions cached under an older value are made again. */
  aclEpoch = 0
  #log: Logger

  private constructor(config: Readonly<Config>, log: Logger, authenticators: Authenticator[], acl: AclFile | null, audit: AuditLog, pool: VerifyPool) {
    this.#log = log
    this.authenticators = authenticators
    this.acl = acl
    this.audit = audit
    this.#scramFile = config.auth.scramFile
    if (this.#scramFile !== '') {
      this.#scramUsers = loadScramFile(this.#scramFile)
      // unknown users get fake salts from this secret: derived from the credentials, so they stay
      // the same across restarts (a per-process random secret would tell unknown users apart)
      const secret = createHash('sha256').update('vmqtt scram fake salts')
      for (const [user, c] of this.#scramUsers) secret.update(user).update(c.serverKey)
      this.scram = new ScramSha256Auth({ lookup: (u) => this.#scramUsers.get(u), secret: secret.digest() })
    } else this.scram = null
    const anyAuth = authenticators.length > 0 || this.scram !== null
    const a = config.auth.anonymous
    this.anonymous = a === 'auto' ? !anyAuth : a
    const { failDelay, failDelayMax, failDelayAddressMax } = config.auth
    this.#gate = new LoginGate({ failDelay, failDelayMax, failDelayAddressMax })
    this.pool = pool
  }

  /** Builds everything the config names; throws an Error naming the file that is wrong. */
  static async create(config: Readonly<Config>, log: Logger): Promise<Security> {
    const a = config.auth
    const onError = (message: string) => log.error('reload failed, previous version kept', { error: message })
    const audit = new AuditLog(config.audit.log)
    const onReload = (what: string) => () => audit.event('reload', { file: what, result: 'ok' })
    let self: Security | null = null
    const onAcl = () => { onReload(config.acl.file)(); if (self !== null) self.aclEpoch++; self?.onAclReload?.() }
    const chain: Authenticator[] = []
    const pool = new VerifyPool(a.maxConcurrentVerifications, a.maxQueuedVerifications)
    let acl: AclFile | null = null
    try {
      return await build()
    } catch (e) {
      for (const a of chain) a.close?.()
      ;(acl as AclFile | null)?.close()
      throw e
    }
    async function build(): Promise<Security> {
      if (config.tls.identity !== 'off') chain.push(certIdentity(config.tls.identity))
      const onUsers = (_: number, removed: string[]) => { onReload(a.passwordFile)(); if (removed.length > 0) self?.onUsersRemoved?.(removed) }
      if (a.passwordFile !== '') chain.push(new PasswordFileAuthenticator(a.passwordFile, { onError, onReload: onUsers, pool }))
      if (a.jwtSecret !== '' || a.jwtPublicKey !== '' || a.jwtJwks !== '') {
        chain.push(await JwtAuth.create({
          ...(a.jwtSecret !== '' ? { secret: a.jwtSecret } : {}),
          ...(a.jwtPublicKey !== '' ? { publicKey: a.jwtPublicKey } : {}),
          ...(a.jwtJwks !== '' ? { jwksFile: a.jwtJwks } : {}),
          ...(a.jwtIssuer !== '' ? { issuer: a.jwtIssuer } : {}),
          ...(a.jwtAudience !== '' ? { audience: a.jwtAudience } : {}),
          usernameClaim: a.jwtUsernameClaim, aclClaim: a.jwtAclClaim,
        }))
      }
      acl = config.acl.file !== '' ? new AclFile(config.acl.file, { onError, onReload: onAcl }) : null
      self = new Security(config, log, chain, acl, audit, pool)
      if (acl !== null && chain.length === 0) {
        log.warn('ACL rules apply to usernames no authenticator has verified: any client can claim any username; configure a password file, JWT, SCRAM or certificate identity', { acl: config.acl.file })
      }
      return self
    }
  }

  /** Nothing to check: no authenticator, anonymous allowed, no ACL (the CONNECT fast path). */
  get open(): boolean {
    return this.authenticators.length === 0 && this.anonymous && this.acl === null
  }

  /** Runs the chain. All hooks deferring: anonymous clients per policy, credentials refused. */
  async authenticate(req: AuthRequest): Promise<AuthResult> {
    for (const a of this.authenticators) {
      const r = await a.authenticate(req)
      if (r.decision !== 'defer') return r.decision === 'deny' ? { ...r, reason: r.reason ?? BAD_CREDENTIALS, detail: `${a.name}: ${r.detail ?? 'denied'}` } : r
    }
    const credentials = req.username !== undefined || req.password !== undefined
    if (!credentials) {
      return this.anonymous ? { decision: 'allow', detail: 'anonymous' } : { decision: 'deny', reason: NOT_AUTHORIZED, detail: 'anonymous access is off' }
    }
    // no authenticator to check them: credentials count for nothing, the anonymous policy decides
    if (this.authenticators.length === 0) {
      return this.anonymous ? { decision: 'allow', detail: 'no authenticator configured' } : { decision: 'deny', reason: NOT_AUTHORIZED, detail: 'anonymous access is off and no authenticator is configured' }
    }
    // credentials nobody vouched for: the same answer as a wrong password, so usernames don't leak
    return { decision: 'deny', reason: BAD_CREDENTIALS, detail: 'unknown user or credentials' }
  }

  /** Waits until a login from `address` for `username` may be checked (see LoginGate.turn);
   * null: refuse it as busy (deadline in ms since the epoch). */
  loginTurn(address: string, username: string | undefined, deadline: number): Promise<LoginTurn | null> {
    return this.#gate.turn(address, username, deadline)
  }

  /**
   * The delay (ms) before answering a login, recording a failure when `failed` (see LoginGate):
   * growing per address and username, a small part per address; a success waits as long as a
   * failure would. IPv6 addresses count per /64.
   */
  loginDelay(address: string, username: string | undefined, failed: boolean): number {
    return this.#gate.delay(address, username, failed)
  }

  /** A login from `address` was refused as busy: its next ones are checked after first logins (LoginGate.busy). */
  loginBusy(address: string): void {
    this.#gate.busy(address)
  }

  /** Forgets old failure counters (called from the broker's periodic sweep). */
  prune(now = Date.now()): void {
    this.#gate.prune(now)
  }

  /** Whether ACL checks apply to this client at all (a token's lists, or a rules file). */
  restricts(who: Principal): boolean {
    return who.acl !== null || this.acl !== null
  }

  /** May this client publish to topic / subscribe to filter (without $share prefix)? */
  authorize(who: Principal, action: AclAction, topic: string): boolean {
    if (!this.restricts(who)) return true
    const req = { clientId: who.clientId, username: who.username, address: who.socket.remoteAddress, action, topic }
    const d = who.acl !== null ? authorizeClientAcl(who.acl, req) : this.acl!.authorize(req)
    return d === 'allow'
  }

  /** Re-reads every file (SIGHUP, admin API). Returns the errors; what failed keeps its old version. */
  async reload(): Promise<string[]> {
    const errors: string[] = []
    const files: string[] = []
    for (const a of this.authenticators) {
      if (a.reload === undefined) continue
      try { await a.reload() } catch (e) { errors.push((e as Error).message) }
    }
    if (this.acl !== null) {
      try { this.acl.reload(); files.push(this.acl.path) } catch (e) { errors.push((e as Error).message) }
    }
    if (this.#scramFile !== '') {
      try { this.#scramUsers = loadScramFile(this.#scramFile) } catch (e) { errors.push((e as Error).message) }
    }
    for (const e of errors) this.#log.error('reload failed, previous version kept', { error: e })
    return errors
  }

  /** The enhanced-authentication methods this config offers (MQTT 5 AUTH). */
  methods(): [string, ScramSha256Auth][] {
    return this.scram !== null ? [[SCRAM_SHA_256, this.scram]] : []
  }

  close(): void {
    for (const a of this.authenticators) a.close?.()
    this.acl?.close()
  }
}

/** Reads a SCRAM credentials file; throws naming the file (and line) when it is wrong. */
export function loadScramFile(path: string): Map<string, ScramCredentials> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    throw new Error(`SCRAM file ${path}: cannot read (${(e as Error).message})`)
  }
  return parseScramFile(text, path)
}

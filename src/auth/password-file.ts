/**
 * Password-file authenticator.
 *
 * File format: one `username:hash` per line. Blank lines and lines whose first non-blank
 * character is `#` are ignored. The hash is the PHC string `Bun.password.hash(pw,
 * { algorithm: 'argon2id' })` produces (`$argon2id$v=19$m=65536,t=2,p=1$salt$hash`); argon2i,
 * argon2d and bcrypt (`$2a$`, `$2b$`, `$2y$`) hashes are accepted too. Usernames are not empty
 * and contain no `:`, whitespace or control characters, and do not start with `#`. A user may
 * appear once. `vmqtt passwd FILE USER` writes such lines (see addOrUpdateUser).
 *
 * Decisions: no username → defer; a username not in the file → defer, so that a later hook
 * (JWT, mTLS) may still decide, and the chain's final default applies when none does (the
 * chain should answer an all-defer CONNECT with the same 0x86 as a wrong password here, or the
 * reason code tells which usernames exist); known user and the right password → allow; known
 * user and a wrong, missing or empty password → deny 0x86 (Bad User Name or Password).
 * An unknown username with a password still runs one hash verification (against the hash of
 * a user in the file, result discarded), so the time taken does not reveal which users exist.
 */
import { decodeScramCredentials, encodeScramCredentials, scramCredentials, type ScramCredentials } from './scram.ts'
import { closeSync, existsSync, fchmodSync, fsyncSync, openSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import type { AuthRequest, AuthResult, Authenticator } from './types.ts'
import { BUSY, type Lane, type VerifyPool } from './verify-pool.ts'
import { readText, WatchedFile, type WatchedFileOptions } from './watched-file.ts'

/** CONNACK reason: Bad User Name or Password. */
const BAD_USER_OR_PASSWORD = 0x86
const SERVER_BUSY = 0x89

/** Verified against when the file has no users (argon2id, Bun's default cost; random password). */
const FALLBACK_DUMMY_HASH = '$argon2id$v=19$m=65536,t=2,p=1$dzOV3zkmXNrX+Gk44vD3KMR7O3X3nLvR4BCxkMY3t/g$IA8ZhWKvHOF8Ls4Cgqa/P2hZp1s/6pgsmDL9JeT1Bi0'

const ARGON2 = /^\$argon2(?:id|i|d)\$(?:v=\d+\$)?m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/
const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/

/** Returns what is wrong with a username for the password file, or null when it is valid. */
export function usernameError(user: string): string | null {
  if (user.length === 0) return 'username is empty'
  if (user.includes(':')) return `username '${user}' contains ':'`
  if (/[\s\p{Cc}]/u.test(user)) return `username ${JSON.stringify(user)} contains whitespace or a control character`
  if (user.startsWith('#')) return `username '${user}' starts with '#' (the line would be a comment)`
  return null
}

function isComment(line: string): boolean {
  const t = line.trim()
  return t.length === 0 || t.startsWith('#')
}

/** Parses a password file's text into username → hash. Throws naming `path` and the line. */
export function parsePasswordFile(text: string, path: string): Map<string, string> {
  const users = new Map<string, string>()
  const firstLine = new Map<string, number>()
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    if (isComment(line)) continue
    const where = `${path}:${i + 1}`
    const t = line.trim()
    const colon = t.indexOf(':')
    if (colon < 0) throw new Error(`${where}: expected 'username:hash'`)
    const user = t.slice(0, colon)
    const hash = t.slice(colon + 1)
    const bad = usernameError(user)
    if (bad !== null) throw new Error(`${where}: ${bad}`)
    if (!ARGON2.test(hash) && !BCRYPT.test(hash)) {
      throw new Error(`${where}: the hash of '${user}' is not an argon2 PHC string or a bcrypt hash`)
    }
    const first = firstLine.get(user)
    if (first !== undefined) throw new Error(`${where}: user '${user}' already defined on line ${first}`)
    firstLine.set(user, i + 1)
    users.set(user, hash)
  }
  return users
}

/** Reads and parses a password file; throws a message naming the file (and line). */
export function loadPasswordFile(path: string): Map<string, string> {
  return parsePasswordFile(readText(path), path)
}

export interface PasswordFileOptions extends WatchedFileOptions {
  /** Called after a re-read (change or reload()) replaced the users; `removed`: users no longer in the file. */
  onReload?: (users: number, removed: string[]) => void
  /** Caps concurrent verifications (shared by the broker); without it, no cap. */
  pool?: VerifyPool
}

export class PasswordFileAuthenticator implements Authenticator {
  readonly name = 'password-file'
  readonly path: string
  #file: WatchedFile<Map<string, string>>
  /** The users of the previous read, to tell which ones a re-read removed. */
  #users = new Map<string, string>()
  #pool: VerifyPool | undefined

  /** Loads the file (throws naming the file and line when it is invalid) and starts watching. */
  constructor(path: string, options: PasswordFileOptions = {}) {
    this.path = path
    this.#pool = options.pool
    this.#file = new WatchedFile(path, 'users', parsePasswordFile, (users) => {
      const removed = [...this.#users.keys()].filter((u) => !users.has(u))
      this.#users = users
      options.onReload?.(users.size, removed)
    }, options)
    this.#users = this.#file.value
  }

  get size(): number {
    return this.#file.value.size
  }

  has(user: string): boolean {
    return this.#file.value.has(user)
  }

  async authenticate(req: AuthRequest): Promise<AuthResult> {
    const user = req.username
    if (user === undefined) return { decision: 'defer', detail: 'no username' }
    const hash = this.#file.value.get(user)
    const password = req.password
    if (password === undefined || password.length === 0) {
      // no verification on either path, so both answer at once
      return hash === undefined
        ? { decision: 'defer', detail: 'unknown user' }
        : { decision: 'deny', reason: BAD_USER_OR_PASSWORD, detail: 'no password' }
    }
    // an unknown user costs the same as a known one, result ignored: timing does not reveal
    // which users exist (and both wait for a slot in the pool alike)
    const lane = req.suspect === true ? 'suspect' : req.trusted === true ? 'trusted' : 'clean'
    const ok = await this.#verify(password, hash ?? this.#dummyHash(), lane, req)
    if (ok === BUSY) return { decision: 'deny', reason: SERVER_BUSY, detail: 'too many password checks waiting' }
    if (hash === undefined) return { decision: 'defer', detail: 'unknown user' }
    if (ok) return { decision: 'allow', username: user, detail: 'password verified' }
    return { decision: 'deny', reason: BAD_USER_OR_PASSWORD, detail: 'wrong password' }
  }

  /** Re-reads the file now. Throws (naming file and line) when invalid; the old users stay. */
  reload(): void {
    this.#file.reload()
  }

  /** Stops watching the file. */
  close(): void {
    this.#file.close()
  }

  /** Bun.password.verify runs on Bun's thread pool, off the event loop. */
  async #verify(password: Buffer, hash: string, lane: Lane, req: AuthRequest): Promise<boolean | typeof BUSY> {
    const check = async () => {
      try {
        return await Bun.password.verify(password, hash)
      } catch {
        return false
      }
    }
    return this.#pool === undefined ? check() : this.#pool.run(check, lane, req.abandoned, req.deadline)
  }

  #dummyHash(): string {
    for (const hash of this.#file.value.values()) return hash
    return FALLBACK_DUMMY_HASH
  }
}

/** What a credentials file holds: argon2id hashes (password file) or SCRAM-SHA-256 keys. */
export type CredentialFormat = 'argon2id' | 'scram'

/** Adds `user` or replaces its hash; creates the file (mode 0600) when missing. */
export async function addOrUpdateUser(path: string, user: string, password: string, format: CredentialFormat = 'argon2id'): Promise<'added' | 'updated'> {
  const bad = usernameError(user)
  if (bad !== null) throw new Error(bad)
  if (password.length === 0) throw new Error('password is empty')
  const target = resolveTarget(path)
  const lines = existsSync(target) ? readChecked(target, format) : []
  const hash = format === 'scram' ? encodeScramCredentials(scramCredentials(password)) : await Bun.password.hash(password, { algorithm: 'argon2id' })
  const entry = `${user}:${hash}`
  const at = findUser(lines, user)
  if (at >= 0) lines[at] = entry
  else {
    if (lines.length > 0 && lines[lines.length - 1] === '') lines[lines.length - 1] = entry
    else lines.push(entry)
    lines.push('')
  }
  writeAtomically(target, lines.join('\n'))
  return at >= 0 ? 'updated' : 'added'
}

/** Removes `user`'s line, keeping every other line. Throws when the file or the user is missing. */
export function removeUser(path: string, user: string, format: CredentialFormat = 'argon2id'): void {
  const target = resolveTarget(path)
  if (!existsSync(target)) throw new Error(`${path}: no such file`)
  const lines = readChecked(target, format)
  const at = findUser(lines, user)
  if (at < 0) throw new Error(`${path}: no user '${user}'`)
  lines.splice(at, 1)
  writeAtomically(target, lines.join('\n'))
}

/** The file behind a symlink, so that the rename replaces the file and keeps the link. */
function resolveTarget(path: string): string {
  return existsSync(path) ? realpathSync(path) : path
}

/** The file's lines after checking it parses (a bad line must be fixed by hand first). */
function readChecked(path: string, format: CredentialFormat): string[] {
  const text = readText(path)
  if (format === 'scram') parseScramFile(text, path)
  else parsePasswordFile(text, path)
  return text.split('\n')
}

function findUser(lines: string[], user: string): number {
  const prefix = `${user}:`
  return lines.findIndex(l => !isComment(l) && l.trim().startsWith(prefix))
}

/** Writes a temp file next to the target, fsyncs it and renames it over the target. */
function writeAtomically(path: string, text: string): void {
  const mode = existsSync(path) ? statSync(path).mode & 0o777 : 0o600
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`)
  try {
    const fd = openSync(tmp, 'wx', mode)
    try {
      fchmodSync(fd, mode) // exact mode, whatever the umask
      writeFileSync(fd, text)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, path)
  } catch (e) {
    rmSync(tmp, { force: true })
    throw new Error(`${path}: cannot write: ${(e as Error).message}`)
  }
  try {
    const dir = openSync(dirname(path), 'r')
    try { fsyncSync(dir) } finally { closeSync(dir) }
  } catch {
    // directory fsync is best effort (not supported everywhere)
  }
}

/** A SCRAM credentials file: `user:SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey` lines
 * (made with `vmqtt passwd --scram`); errors name the file and line. */
export function parseScramFile(text: string, path: string): Map<string, ScramCredentials> {
  const users = new Map<string, ScramCredentials>()
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const at = line.indexOf(':')
    if (at <= 0) throw new Error(`${path}:${i + 1}: expected user:SCRAM-SHA-256$...`)
    const user = line.slice(0, at)
    if (users.has(user)) throw new Error(`${path}:${i + 1}: user '${user}' appears twice`)
    try {
      users.set(user, decodeScramCredentials(line.slice(at + 1)))
    } catch (e) {
      throw new Error(`${path}:${i + 1}: ${(e as Error).message}`)
    }
  })
  return users
}

import { afterAll, afterEach, beforeAll, describe, expect, spyOn, test } from 'bun:test'
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PasswordFileAuthenticator, addOrUpdateUser, loadPasswordFile, parsePasswordFile, removeUser, usernameError } from '../../src/auth/password-file.ts'
import type { AuthRequest } from '../../src/auth/types.ts'
import { errorOf } from '../helpers/mqtt-error.ts'

const dir = mkdtempSync(join(tmpdir(), 'vmqtt-passwd-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let n = 0
/** A fresh file path in the temp dir (each test its own, so watchers do not see each other). */
function tempPath(): string {
  return join(dir, `users-${++n}.txt`)
}

// cheap hashes: verification cost is in the hash's own parameters
let aliceHash = ''
let bobBcrypt = ''
beforeAll(async () => {
  aliceHash = await Bun.password.hash('alice-pw', { algorithm: 'argon2id', memoryCost: 64, timeCost: 1 })
  bobBcrypt = await Bun.password.hash('bob-pw', { algorithm: 'bcrypt', cost: 4 })
})

function req(username: string | undefined, password?: string): AuthRequest {
  return {
    clientId: 'c1',
    username,
    password: password === undefined ? undefined : Buffer.from(password),
    address: '127.0.0.1',
    listener: 'mqtt',
    cert: undefined,
  }
}

const open: PasswordFileAuthenticator[] = []
afterEach(() => {
  for (const a of open.splice(0)) a.close()
})

function authenticator(text: string, options: ConstructorParameters<typeof PasswordFileAuthenticator>[1] = { watch: false }): PasswordFileAuthenticator {
  const path = tempPath()
  writeFileSync(path, text)
  const a = new PasswordFileAuthenticator(path, options)
  open.push(a)
  return a
}

/** Events pushed by a callback, awaited one at a time with a timeout. */
class Events<T> {
  #items: T[] = []
  #waiter: ((v: T) => void) | null = null
  readonly push = (v: T) => {
    if (this.#waiter !== null) {
      const w = this.#waiter
      this.#waiter = null
      w(v)
    } else this.#items.push(v)
  }
  get count(): number {
    return this.#items.length
  }
  next(ms = 5000): Promise<T> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift()!)
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no event within ${ms} ms`)), ms)
      this.#waiter = v => {
        clearTimeout(t)
        resolve(v)
      }
    })
  }
}

describe('file format', () => {
  test('comments, blank lines, surrounding spaces and CRLF are ignored', () => {
    const users = parsePasswordFile(`# users\n\n  alice:${aliceHash}  \r\n   # indented comment\nbob:${bobBcrypt}\n`, 'f')
    expect([...users.keys()]).toEqual(['alice', 'bob'])
    expect(users.get('alice')).toBe(aliceHash)
  })

  test('bad lines name the file and the line number', () => {
    const p = 'users.txt'
    expect(errorOf(() => parsePasswordFile(`# c\nalice:${aliceHash}\nbob\n`, p))).toBe(`users.txt:3: expected 'username:hash'`)
    expect(errorOf(() => parsePasswordFile(`\nal ice:${aliceHash}\n`, p))).toStartWith('users.txt:2: username "al ice" contains whitespace')
    expect(errorOf(() => parsePasswordFile(`alice:plaintext\n`, p))).toStartWith(`users.txt:1: the hash of 'alice' is not`)
    expect(errorOf(() => parsePasswordFile(`:${aliceHash}\n`, p))).toBe('users.txt:1: username is empty')
    expect(errorOf(() => parsePasswordFile(`alice:${aliceHash}\n#\nalice:${bobBcrypt}\n`, p))).toBe(`users.txt:3: user 'alice' already defined on line 1`)
  })

  test('a missing file is an error naming it', () => {
    const p = join(dir, 'missing.txt')
    expect(errorOf(() => loadPasswordFile(p))).toStartWith(`${p}: cannot read`)
  })

  test('usernameError', () => {
    expect(usernameError('alice')).toBeNull()
    expect(usernameError('a:b')).toContain("contains ':'")
    expect(usernameError('a\tb')).toContain('whitespace')
    expect(usernameError('#root')).toContain("starts with '#'")
    expect(usernameError('')).toBe('username is empty')
  })
})

describe('authenticate', () => {
  test('no username defers', async () => {
    const a = authenticator(`alice:${aliceHash}\n`)
    expect((await a.authenticate(req(undefined, 'x'))).decision).toBe('defer')
  })

  test('unknown user defers (another hook may decide)', async () => {
    const a = authenticator(`alice:${aliceHash}\n`)
    expect((await a.authenticate(req('mallory', 'alice-pw'))).decision).toBe('defer')
    expect((await a.authenticate(req('mallory'))).decision).toBe('defer')
  })

  test('known user with the right password is allowed and keeps the username', async () => {
    const a = authenticator(`alice:${aliceHash}\nbob:${bobBcrypt}\n`)
    expect(await a.authenticate(req('alice', 'alice-pw'))).toMatchObject({ decision: 'allow', username: 'alice' })
    expect(await a.authenticate(req('bob', 'bob-pw'))).toMatchObject({ decision: 'allow', username: 'bob' })
  })

  test('known user with a wrong, missing or empty password is denied 0x86', async () => {
    const a = authenticator(`alice:${aliceHash}\n`)
    expect(await a.authenticate(req('alice', 'bob-pw'))).toMatchObject({ decision: 'deny', reason: 0x86 })
    expect(await a.authenticate(req('alice'))).toMatchObject({ decision: 'deny', reason: 0x86 })
    expect(await a.authenticate(req('alice', ''))).toMatchObject({ decision: 'deny', reason: 0x86 })
    expect(await a.authenticate(req('bob', 'alice-pw'))).toMatchObject({ decision: 'defer' })
  })

  test('an unknown user costs one verification, like a known one', async () => {
    const a = authenticator(`alice:${aliceHash}\n`)
    const verify = spyOn(Bun.password, 'verify')
    try {
      await a.authenticate(req('mallory', 'guess'))
      expect(verify).toHaveBeenCalledTimes(1)
      // against a hash of the file's own cost, not some cheaper one
      expect(verify.mock.calls[0]![1]).toBe(aliceHash)
      await a.authenticate(req('alice', 'guess'))
      expect(verify).toHaveBeenCalledTimes(2)
      // no or an empty password: no verification for known or unknown users alike
      for (const password of [undefined, '']) {
        expect((await a.authenticate(req('alice', password))).decision).toBe('deny')
        expect((await a.authenticate(req('mallory', password))).decision).toBe('defer')
      }
      expect(verify).toHaveBeenCalledTimes(2)
    } finally {
      verify.mockRestore()
    }
  })

  test('an empty file still verifies unknown users against a dummy argon2id hash', async () => {
    const a = authenticator('# nobody yet\n')
    const verify = spyOn(Bun.password, 'verify')
    try {
      expect((await a.authenticate(req('mallory', 'guess'))).decision).toBe('defer')
      expect(verify).toHaveBeenCalledTimes(1)
      expect(String(verify.mock.calls[0]![1])).toStartWith('$argon2id$v=19$m=65536,t=2,p=1$')
    } finally {
      verify.mockRestore()
    }
  })
})

describe('reload', () => {
  test('reload() picks up changes; a bad file throws with its line and keeps the old users', async () => {
    const a = authenticator(`alice:${aliceHash}\n`)
    writeFileSync(a.path, `bob:${bobBcrypt}\n`)
    a.reload()
    expect(a.has('alice')).toBe(false)
    expect((await a.authenticate(req('bob', 'bob-pw'))).decision).toBe('allow')
    writeFileSync(a.path, `alice:${aliceHash}\nbroken line\n`)
    expect(errorOf(() => a.reload())).toBe(`${a.path}:2: expected 'username:hash'`)
    expect(a.has('bob')).toBe(true)
    expect(a.has('alice')).toBe(false)
  })

  test('the constructor throws naming file and line', () => {
    const path = tempPath()
    writeFileSync(path, `alice:${aliceHash}\n\nbob:nothash\n`)
    expect(errorOf(() => new PasswordFileAuthenticator(path, { watch: false }))).toStartWith(`${path}:3: the hash of 'bob'`)
  })

  test('a changed file is re-read (in-place write and rename over it); a bad one is reported and ignored', async () => {
    const reloads = new Events<number>()
    const errors = new Events<string>()
    const a = authenticator(`alice:${aliceHash}\n`, { onReload: reloads.push, onError: errors.push })
    // an in-place write
    writeFileSync(a.path, `alice:${aliceHash}\nbob:${bobBcrypt}\n`)
    expect(await reloads.next()).toBe(2)
    expect((await a.authenticate(req('bob', 'bob-pw'))).decision).toBe('allow')
    // an editor's save: write a temp file, rename it over the original
    writeFileSync(`${a.path}.swp`, `bob:${bobBcrypt}\n`)
    renameSync(`${a.path}.swp`, a.path)
    expect(await reloads.next()).toBe(1)
    expect(a.has('alice')).toBe(false)
    // a bad version: reported with its line number, the users stay
    writeFileSync(a.path, `bob:${bobBcrypt}\ncarol\n`)
    expect(await errors.next()).toBe(`${a.path}:2: expected 'username:hash'; keeping the previous users`)
    expect(a.has('bob')).toBe(true)
    expect(reloads.count).toBe(0)
  })

  test('close() stops watching', async () => {
    const reloads = new Events<number>()
    const a = authenticator(`alice:${aliceHash}\n`, { onReload: reloads.push, debounceMs: 20 })
    a.close()
    writeFileSync(a.path, `bob:${bobBcrypt}\n`)
    // a negative check: give a live watcher (20 ms debounce) ample time to fire
    await expect(reloads.next(300)).rejects.toThrow('no event')
    expect(a.has('alice')).toBe(true)
  })
})

describe('addOrUpdateUser / removeUser', () => {
  test('creates the file with mode 0600 and a verifiable argon2id hash', async () => {
    const path = tempPath()
    expect(await addOrUpdateUser(path, 'alice', 'pw one')).toBe('added')
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const users = loadPasswordFile(path)
    expect(users.get('alice')).toStartWith('$argon2id$')
    expect(await Bun.password.verify('pw one', users.get('alice')!)).toBe(true)
  })

  test('replaces the user in place, keeping other lines, comments and the mode', async () => {
    const path = tempPath()
    writeFileSync(path, `# head\nalice:${aliceHash}\n\n# bob below\nbob:${bobBcrypt}\n`)
    chmodSync(path, 0o640)
    expect(await addOrUpdateUser(path, 'alice', 'new')).toBe('updated')
    const lines = readFileSync(path, 'utf8').split('\n')
    expect(lines[0]).toBe('# head')
    expect(lines[1]).toStartWith('alice:$argon2id$')
    expect(lines.slice(2)).toEqual(['', '# bob below', `bob:${bobBcrypt}`, ''])
    expect(await Bun.password.verify('new', loadPasswordFile(path).get('alice')!)).toBe(true)
    expect(statSync(path).mode & 0o777).toBe(0o640)
    // the temp file was renamed, not left behind
    expect(readdirSync(dir).filter(f => f.endsWith('.tmp'))).toEqual([])
  })

  test('rejects bad usernames and files with bad lines, without writing', async () => {
    const path = tempPath()
    await expect(addOrUpdateUser(path, 'a:b', 'pw')).rejects.toThrow("contains ':'")
    await expect(addOrUpdateUser(path, 'a b', 'pw')).rejects.toThrow('whitespace')
    await expect(addOrUpdateUser(path, 'alice', '')).rejects.toThrow('password is empty')
    expect(existsSync(path)).toBe(false)
    writeFileSync(path, 'junk\n')
    await expect(addOrUpdateUser(path, 'alice', 'pw')).rejects.toThrow(`${path}:1: expected 'username:hash'`)
    expect(readFileSync(path, 'utf8')).toBe('junk\n')
  })

  test('removeUser removes only that line; a missing user or file is an error', () => {
    const path = tempPath()
    writeFileSync(path, `# c\nalice:${aliceHash}\nbob:${bobBcrypt}\n`)
    removeUser(path, 'alice')
    expect(readFileSync(path, 'utf8')).toBe(`# c\nbob:${bobBcrypt}\n`)
    expect(errorOf(() => removeUser(path, 'alice'))).toBe(`${path}: no user 'alice'`)
    expect(errorOf(() => removeUser(join(dir, 'nope.txt'), 'bob'))).toContain('no such file')
  })
})

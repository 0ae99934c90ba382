import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadPasswordFile } from '../../src/auth/password-file.ts'
import { scramCredentials } from '../../src/auth/scram.ts'
import { loadScramFile } from '../../src/auth/security.ts'

const repo = join(import.meta.dir, '../..')
const dir = mkdtempSync(join(tmpdir(), 'vmqtt-cli-passwd-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** Runs `bun src/main.ts passwd ...args` with `input` piped to stdin (not a TTY). */
async function passwd(args: string[], input = ''): Promise<Run> {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'passwd', ...args], {
    cwd: repo,
    stdin: new TextEncoder().encode(input),
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { code, stdout, stderr }
}

describe('vmqtt passwd', () => {
  const file = join(dir, 'users.txt')

  test('adds a user from the first line of stdin, creating the file with mode 0600', async () => {
    const r = await passwd([file, 'alice'], 'correct horse\nsecond line ignored\n')
    expect(r).toMatchObject({ code: 0, stderr: '' })
    expect(r.stdout).toBe(`added user 'alice' to ${file}\n`)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const hash = loadPasswordFile(file).get('alice')!
    expect(hash).toStartWith('$argon2id$')
    expect(await Bun.password.verify('correct horse', hash)).toBe(true)
  })

  test('updates an existing user in place and keeps the others', async () => {
    writeFileSync(file, `# users\n${readFileSync(file, 'utf8')}`)
    expect((await passwd([file, 'bob'], 'bob-pw\r\n')).code).toBe(0)
    const r = await passwd([file, 'alice'], 'new secret')
    expect(r.code).toBe(0)
    expect(r.stdout).toBe(`updated user 'alice' in ${file}\n`)
    const users = loadPasswordFile(file)
    expect([...users.keys()]).toEqual(['alice', 'bob'])
    expect(await Bun.password.verify('new secret', users.get('alice')!)).toBe(true)
    expect(await Bun.password.verify('bob-pw', users.get('bob')!)).toBe(true)
    expect(readFileSync(file, 'utf8')).toStartWith('# users\nalice:')
  })

  test('--delete removes the user', async () => {
    const r = await passwd([file, 'alice', '--delete'])
    expect(r).toMatchObject({ code: 0, stdout: `deleted user 'alice' from ${file}\n` })
    expect([...loadPasswordFile(file).keys()]).toEqual(['bob'])
  })

  test('--scram writes SCRAM-SHA-256 credentials that derive from the password (and no password)', async () => {
    const scram = join(dir, 'scram.txt')
    const r = await passwd(['--scram', scram, 'carol'], 'pencil\n')
    expect(r).toMatchObject({ code: 0, stderr: '' })
    const text = readFileSync(scram, 'utf8')
    expect(text).toStartWith('carol:SCRAM-SHA-256$4096:')
    expect(text).not.toContain('pencil')
    const c = loadScramFile(scram).get('carol')!
    // the same salt and iterations with the right password give the same keys; a wrong one does not
    expect(scramCredentials('pencil', { salt: c.salt, iterations: c.iterations })).toEqual(c)
    expect(scramCredentials('pencil!', { salt: c.salt, iterations: c.iterations }).storedKey.equals(c.storedKey)).toBe(false)
    expect((await passwd(['--scram', '--delete', scram, 'carol'], '')).code).toBe(0)
    expect(loadScramFile(scram).size).toBe(0)
  })

  test('errors go to stderr as "vmqtt passwd: ..." with exit code 1', async () => {
    const cases: [string[], string, string][] = [
      [[file, 'al ice'], 'pw\n', 'vmqtt passwd: username "al ice" contains whitespace or a control character\n'],
      [[file, 'a:b'], 'pw\n', "vmqtt passwd: username 'a:b' contains ':'\n"],
      [[file, 'carol'], '\n', 'vmqtt passwd: password is empty\n'],
      [[file, 'carol'], '', 'vmqtt passwd: password is empty\n'],
      [[file, 'alice', '--delete'], '', `vmqtt passwd: ${file}: no user 'alice'\n`],
      [[join(dir, 'none.txt'), 'bob', '--delete'], '', `vmqtt passwd: ${join(dir, 'none.txt')}: no such file\n`],
      [[file], 'pw\n', 'vmqtt passwd: usage: vmqtt passwd FILE USER [--delete] [--scram]\n'],
      [[file, 'bob', 'extra'], 'pw\n', 'vmqtt passwd: usage: vmqtt passwd FILE USER [--delete] [--scram]\n'],
    ]
    const before = readFileSync(file, 'utf8')
    for (const [args, input, stderr] of cases) {
      const r = await passwd(args, input)
      expect({ args, ...r }).toEqual({ args, code: 1, stdout: '', stderr })
    }
    expect(readFileSync(file, 'utf8')).toBe(before)
    expect(existsSync(join(dir, 'none.txt'))).toBe(false)
  })

  test('a file with a bad line is not rewritten', async () => {
    const bad = join(dir, 'bad.txt')
    writeFileSync(bad, 'ok-looking\n')
    const r = await passwd([bad, 'alice'], 'pw\n')
    expect(r).toMatchObject({ code: 1, stderr: `vmqtt passwd: ${bad}:1: expected 'username:hash'\n` })
    expect(readFileSync(bad, 'utf8')).toBe('ok-looking\n')
  })
})

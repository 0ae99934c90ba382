import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface PasswdFile extends AsyncDisposable {
  path: string
}

/**
 * A password file in a temp dir (removed on dispose) with argon2id hashes of `users`
 * (name → password). `cost` 'real' uses Bun's default (64 MiB, ~0.1-0.2 s a check, what a
 * deployment has); 'cheap' a 1 MiB, one-pass hash for tests that only need a login.
 */
export async function passwdFile(users: Record<string, string>, cost: 'cheap' | 'real' = 'cheap'): Promise<PasswdFile> {
  const dir = mkdtempSync(join(tmpdir(), 'vmqtt-passwd-'))
  const lines: string[] = []
  for (const [user, pw] of Object.entries(users)) {
    const hash = cost === 'real'
      ? await Bun.password.hash(pw, { algorithm: 'argon2id' })
      : await Bun.password.hash(pw, { algorithm: 'argon2id', memoryCost: 1024, timeCost: 1 })
    lines.push(`${user}:${hash}`)
  }
  const path = join(dir, 'passwd')
  writeFileSync(path, `${lines.join('\n')}\n`, { mode: 0o600 })
  return { path, [Symbol.asyncDispose]: async () => rmSync(dir, { recursive: true, force: true }) }
}

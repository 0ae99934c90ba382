import { expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { envName } from '../../src/config/env.ts'
import { defaults } from '../../src/config/load.ts'

test('the README documents every configuration key with its environment variable and default', () => {
  const readme = readFileSync(join(import.meta.dir, '..', '..', 'README.md'), 'utf8')
  const missing: string[] = []
  for (const [section, keys] of Object.entries(defaults())) {
    for (const [key, value] of Object.entries(keys as Record<string, unknown>)) {
      const row = readme.split("\n").find((l) => l.startsWith(`| \`${envName(section, key)}\``))
      const shown = String(value) === '' ? '(not set)' : `\`${String(value)}\``
      if (row === undefined || !row.includes(`\`${section}.${key}\``) || !row.includes(shown)) {
        missing.push(`${envName(section, key)} (${section}.${key} = ${String(value)})`)
      }
    }
  }
  expect(missing).toEqual([])
})

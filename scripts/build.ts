#!/usr/bin/env bun
/** Builds the single self-contained executable dist/vmqtt (runtime + code, no other files). */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'

const root = join(import.meta.dir, '..')
const out = join(root, 'dist', 'vmqtt')
mkdirSync(join(root, 'dist'), { recursive: true })
const proc = Bun.spawnSync([process.execPath, 'build', '--compile', '--bytecode', '--format=esm', '--minify-syntax',
  join(root, 'src', 'main.ts'), '--outfile', out], { cwd: root, stdout: 'inherit', stderr: 'inherit' })
if (proc.exitCode !== 0) {
  console.error('build failed')
  process.exit(proc.exitCode ?? 1)
}
console.log(`built ${out}`)

import { readFileSync } from 'node:fs'
import * as v from 'valibot'
import { ConfigSchema, type Config } from './schema.ts'
import { envName, fromEnv } from './env.ts'

export class ConfigError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

type Layer = Record<string, Record<string, unknown>>

export interface LoadOptions {
  /** Path of a JSON config file (from --config or VMQTT_CONFIG). */
  file?: string | undefined
  env?: Record<string, string | undefined>
  /** Values from command-line flags, by section and key. */
  flags?: Layer
}

/** The built-in defaults, derived from the schema. */
export function defaults(): Config {
  return v.parse(ConfigSchema, {})
}

function merge(base: Layer, over: Layer): Layer {
  const out: Layer = {}
  for (const [s, keys] of Object.entries(base)) out[s] = { ...keys }
  for (const [s, keys] of Object.entries(over)) {
    if (keys !== null && typeof keys === 'object' && !Array.isArray(keys)) out[s] = { ...(out[s] ?? {}), ...keys }
    else out[s] = keys as never
  }
  return out
}

function readFile(path: string): Layer {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`)
  }
  try {
    const parsed = JSON.parse(text) as unknown
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('top level must be an object')
    return parsed as Layer
  } catch (e) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(e as Error).message}`)
  }
}

/** defaults < file < VMQTT_* env < flags; the result is validated and frozen. */
export function loadConfig(opts: LoadOptions = {}): Readonly<Config> {
  const env = opts.env ?? {}
  const base = defaults() as unknown as Layer
  const file = opts.file ?? env.VMQTT_CONFIG
  let layered: Layer = {}
  if (file !== undefined && file !== '') layered = merge(layered, readFile(file))
  const fromE = fromEnv(env, base)
  if (fromE.unknown.length > 0) {
    throw new ConfigError(`unknown environment variable(s): ${fromE.unknown.join(', ')} (see README for the list)`)
  }
  layered = merge(merge(layered, fromE.values), opts.flags ?? {})
  const result = v.safeParse(ConfigSchema, layered)
  if (!result.success) {
    const lines = result.issues.map((issue) => {
      const path = issue.path?.map((p) => String(p.key)) ?? []
      const key = path.join('.')
      if (issue.expected === 'never' || issue.message.startsWith('Invalid key')) {
        const section = path.length > 1 ? (base[path[0]!] ?? {}) : base
        return `unknown config key ${key} (allowed: ${Object.keys(section).join(', ')})`
      }
      const envHint = path.length === 2 ? ` (${envName(path[0]!, path[1]!)})` : ''
      const value = JSON.stringify(issue.input)
      return `config key ${key || '(root)'}${envHint}: value ${value} is invalid: ${issue.message}`
    })
    throw new ConfigError(lines.join('\n'))
  }
  return deepFreeze(result.output)
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object') {
    for (const val of Object.values(o)) deepFreeze(val)
    Object.freeze(o)
  }
  return o
}

/** The config as JSON with secrets masked (keys named like password, secret, token, private key, api key). */
export function maskSecrets(config: unknown): unknown {
  return JSON.parse(JSON.stringify(config, (k, val) =>
    /password|secret|token|privatekey|apikey/i.test(k) && typeof val === 'string' ? '***' : val))
}

#!/usr/bin/env bun
// first: for the start command this replaces the process with the allocator settings of
// runtime.ts before the other modules are evaluated
import { defaultsToStart } from './runtime.ts'
import { defineCommand, runMain } from 'citty'
import { startAdmin } from './admin/app.ts'
import { addOrUpdateUser, removeUser, usernameError } from './auth/password-file.ts'
import { bench } from './bench/command.ts'
import { createBroker } from './broker/broker.ts'
import { VERSION } from './broker/sys-topics.ts'
import { ConfigError, loadConfig, maskSecrets } from './config/load.ts'
import type { Config } from './config/schema.ts'

const configArgs = {
  config: { type: 'string', description: 'JSON config file (also VMQTT_CONFIG)' },
  'mqtt-host': { type: 'string', description: 'MQTT listener host (mqtt.host)' },
  'mqtt-port': { type: 'string', description: 'MQTT listener port, 0 = any, off = disabled (mqtt.port)' },
  'admin-port': { type: 'string', description: 'admin HTTP port, off = disabled (admin.port)' },
  'data-dir': { type: 'string', description: 'data directory (data.dir)' },
  'log-level': { type: 'string', description: 'debug | info | warn | error | silent (log.level)' },
} as const

type Args = Partial<Record<keyof typeof configArgs, string>>

function flagLayer(args: Args): Record<string, Record<string, unknown>> {
  const layer: Record<string, Record<string, unknown>> = {}
  const set = (section: string, key: string, raw: string | undefined, numeric: boolean) => {
    if (raw === undefined) return
    layer[section] ??= {}
    layer[section][key] = numeric && raw !== 'off' && /^\d+$/.test(raw) ? Number(raw) : raw
  }
  set('mqtt', 'host', args['mqtt-host'], false)
  set('mqtt', 'port', args['mqtt-port'], true)
  set('admin', 'port', args['admin-port'], true)
  set('data', 'dir', args['data-dir'], false)
  set('log', 'level', args['log-level'], false)
  return layer
}

function load(args: Args): Readonly<Config> {
  try {
    return loadConfig({ file: args.config, env: process.env, flags: flagLayer(args) })
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`vmqtt: invalid configuration\n${e.message}\n`)
      process.exit(1)
    }
    throw e
  }
}

const start = defineCommand({
  meta: { name: 'start', description: 'Start the broker (default)' },
  args: configArgs,
  async run({ args }) {
    const config = load(args)
    const broker = createBroker(config)
    let admin: ReturnType<typeof startAdmin> = null
    let started = false
    let stopping = false
    // the handlers go in before anything listens: a signal that arrives while the broker is
    // starting waits for the start to finish and then shuts down as usual (not the default
    // disposition, which would end the process with 143 and no DISCONNECTs)
    let starting: Promise<void> = Promise.resolve()
    const stop = async (signal: string) => {
      if (stopping) return
      stopping = true
      await starting.catch(() => undefined)
      broker.log.info('shutting down', { signal })
      admin?.stop()
      await broker.close()
      broker.log.info('stopped')
      process.exit(0)
    }
    // SIGHUP: re-read password/ACL/JWT/SCRAM files and TLS certificates without a restart
    process.on('SIGHUP', () => { if (started) void broker.reload() })
    process.on('SIGINT', () => void stop('SIGINT'))
    process.on('SIGTERM', () => void stop('SIGTERM'))
    starting = broker.start()
    try {
      await starting
    } catch (e) {
      broker.log.error('cannot start', { error: (e as Error).message })
      // also on stderr, so the reason shows whatever the log level
      process.stderr.write(`vmqtt: cannot start: ${(e as Error).message}\n`)
      process.exit(1)
    }
    try {
      admin = startAdmin(broker)
    } catch (e) {
      broker.log.error('cannot start admin listener', { error: (e as Error).message })
      await broker.close()
      process.exit(1)
    }
    started = true
  },
})

const config = defineCommand({
  meta: { name: 'config', description: 'Inspect the configuration' },
  subCommands: {
    print: defineCommand({
      meta: { name: 'print', description: 'Print the effective configuration as JSON (secrets masked)' },
      args: configArgs,
      run({ args }) {
        process.stdout.write(`${JSON.stringify(maskSecrets(load(args)), null, 2)}\n`)
      },
    }),
    check: defineCommand({
      meta: { name: 'check', description: 'Validate the configuration; exit 0 when valid, 1 otherwise' },
      args: configArgs,
      run({ args }) {
        load(args)
        process.stdout.write('configuration is valid\n')
      },
    }),
  },
})

/** The first line of stdin (without its line end), reading no further than that line. */
async function readLine(): Promise<string> {
  const decoder = new TextDecoder()
  let text = ''
  for await (const chunk of Bun.stdin.stream()) {
    text += decoder.decode(chunk, { stream: true })
    if (text.includes('\n')) break
  }
  const nl = text.indexOf('\n')
  const line = nl < 0 ? text : text.slice(0, nl)
  return line.endsWith('\r') ? line.slice(0, -1) : line
}

/** Prompts on stderr and reads a line from the terminal without echoing it. */
function readHidden(prompt: string): Promise<string> {
  const stdin = process.stdin
  process.stderr.write(prompt)
  stdin.setRawMode(true)
  stdin.resume()
  return new Promise((resolve, reject) => {
    let value = ''
    const finish = (error: Error | null) => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
      if (error === null) resolve(value)
      else reject(error)
    }
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return finish(null)
        if (ch === '\u0003') return finish(new Error('interrupted'))
        if (ch === '\u007f' || ch === '\b') value = Array.from(value).slice(0, -1).join('')
        else value += ch
      }
    }
    stdin.on('data', onData)
  })
}

/** Terminal: asks twice without echo (once with echo if raw mode is unavailable); pipe: first line. */
async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) return readLine()
  if (typeof process.stdin.setRawMode !== 'function') {
    process.stderr.write('Password: ')
    return readLine()
  }
  const first = await readHidden('Password: ')
  const second = await readHidden('Password again: ')
  if (first !== second) throw new Error('the passwords do not match')
  return first
}

const passwd = defineCommand({
  meta: { name: 'passwd', description: 'Set a user\'s password in a password file (read from stdin), or delete the user' },
  args: {
    file: { type: 'positional', required: false, description: 'password file (created with mode 0600 when missing)' },
    user: { type: 'positional', required: false, description: 'username' },
    delete: { type: 'boolean', description: 'remove the user from the file' },
    scram: { type: 'boolean', description: 'write SCRAM-SHA-256 credentials (for auth.scramFile) instead of an argon2id hash' },
  },
  async run({ args }) {
    const fail = (message: string): never => {
      process.stderr.write(`vmqtt passwd: ${message}\n`)
      process.exit(1)
    }
    const { file, user } = args
    if (file === undefined || user === undefined || args._.length > 2) return fail('usage: vmqtt passwd FILE USER [--delete] [--scram]')
    try {
      if (args.delete) {
        removeUser(file, user, args.scram ? 'scram' : 'argon2id')
        process.stdout.write(`deleted user '${user}' from ${file}\n`)
        return
      }
      const bad = usernameError(user)
      if (bad !== null) return fail(bad)
      const result = await addOrUpdateUser(file, user, await readPassword(), args.scram ? 'scram' : 'argon2id')
      process.stdout.write(result === 'added' ? `added user '${user}' to ${file}\n` : `updated user '${user}' in ${file}\n`)
    } catch (e) {
      fail((e as Error).message)
    }
  },
})

const version = defineCommand({
  meta: { name: 'version', description: 'Print the version' },
  run() {
    process.stdout.write(`vmqtt ${VERSION}\n`)
  },
})

const main = defineCommand({
  meta: { name: 'vmqtt', version: VERSION, description: 'vmqtt MQTT broker' },
  subCommands: { start, config, passwd, bench, version },
})

// `vmqtt` with no command (or only flags) starts the broker.
const argv = process.argv.slice(2)
if (defaultsToStart(argv)) {
  void runMain(start, { rawArgs: argv })
} else {
  void runMain(main, { rawArgs: argv })
}

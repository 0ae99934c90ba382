#!/usr/bin/env bun
import { defineCommand, runMain } from 'citty'
import { startAdmin } from './admin/app.ts'
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
    try {
      await broker.start()
    } catch (e) {
      broker.log.error('cannot start', { error: (e as Error).message })
      // also on stderr, so the reason shows whatever the log level
      process.stderr.write(`vmqtt: cannot start: ${(e as Error).message}\n`)
      process.exit(1)
    }
    let admin: ReturnType<typeof startAdmin> = null
    try {
      admin = startAdmin(broker)
    } catch (e) {
      broker.log.error('cannot start admin listener', { error: (e as Error).message })
      await broker.close()
      process.exit(1)
    }
    let stopping = false
    const stop = async (signal: string) => {
      if (stopping) return
      stopping = true
      broker.log.info('shutting down', { signal })
      admin?.stop()
      await broker.close()
      broker.log.info('stopped')
      process.exit(0)
    }
    process.on('SIGINT', () => void stop('SIGINT'))
    process.on('SIGTERM', () => void stop('SIGTERM'))
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

const version = defineCommand({
  meta: { name: 'version', description: 'Print the version' },
  run() {
    process.stdout.write(`vmqtt ${VERSION}\n`)
  },
})

const main = defineCommand({
  meta: { name: 'vmqtt', version: VERSION, description: 'vmqtt MQTT broker' },
  subCommands: { start, config, version },
})

// `vmqtt` with no command (or only flags) starts the broker.
const argv = process.argv.slice(2)
if (argv.length === 0 || argv[0]!.startsWith('-') && argv[0] !== '--help' && argv[0] !== '-h' && argv[0] !== '--version') {
  void runMain(start, { rawArgs: argv })
} else {
  void runMain(main, { rawArgs: argv })
}

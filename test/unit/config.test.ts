import { afterEach, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { envName } from '../../src/config/env.ts'
import { ConfigError, defaults, loadConfig, maskSecrets } from '../../src/config/load.ts'

const dirs: string[] = []
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

/** Writes a config file in a fresh temp directory (removed after each test). */
function tempConfig(content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmqtt-config-'))
  dirs.push(dir)
  const path = join(dir, 'vmqtt.json')
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content))
  return path
}

function configError(fn: () => unknown): string {
  try {
    fn()
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError)
    return (e as Error).message
  }
  throw new Error('expected a ConfigError, loadConfig succeeded')
}

describe('defaults', () => {
  test('documented defaults', () => {
    const c = loadConfig()
    expect(c.mqtt).toEqual({ host: '0.0.0.0', port: 1883, maxConnections: 100_000, connectTimeout: 10, maxConnectionsPerAddress: 0, connectRatePerAddress: 0, trustedProxies: [] })
    expect(c.admin).toEqual({ host: '0.0.0.0', port: 8080, token: '' })
    expect(c.tls.port).toBe(8883)
    expect(c.auth.anonymous).toBe('auto')
    expect(c.data.dir).toBe('./data')
    expect(c.log.level).toBe('info')
    expect(c.limits.maxPacketSize).toBe(16 * 1024 * 1024)
    expect(c.limits.maxQos).toBe(2)
    expect(c.session.queueOverflow).toBe('refuse')
    expect(c).toEqual(defaults())
  })

  test('environment variable names follow VMQTT_<SECTION>_<KEY>', () => {
    expect(envName('mqtt', 'port')).toBe('VMQTT_MQTT_PORT')
    expect(envName('limits', 'maxPacketSize')).toBe('VMQTT_LIMITS_MAX_PACKET_SIZE')
    expect(envName('session', 'queueQos0')).toBe('VMQTT_SESSION_QUEUE_QOS0')
  })
})

describe('environment', () => {
  test('VMQTT_MQTT_PORT, VMQTT_DATA_DIR, VMQTT_LOG_LEVEL, VMQTT_ADMIN_PORT', () => {
    const c = loadConfig({ env: { VMQTT_MQTT_PORT: '1884', VMQTT_DATA_DIR: '/var/lib/vmqtt', VMQTT_LOG_LEVEL: 'debug', VMQTT_ADMIN_PORT: '9090' } })
    expect(c.mqtt.port).toBe(1884)
    expect(c.data.dir).toBe('/var/lib/vmqtt')
    expect(c.log.level).toBe('debug')
    expect(c.admin.port).toBe(9090)
    expect(c.mqtt.host).toBe('0.0.0.0')
  })

  test("'off' disables a listener; 0 asks for a free port", () => {
    const c = loadConfig({ env: { VMQTT_MQTT_PORT: 'off', VMQTT_ADMIN_PORT: 'off' } })
    expect(c.mqtt.port).toBe('off')
    expect(c.admin.port).toBe('off')
    expect(loadConfig({ env: { VMQTT_MQTT_PORT: '0' } }).mqtt.port).toBe(0)
  })

  test('booleans, camelCase keys and picklists', () => {
    const c = loadConfig({ env: {
      VMQTT_LIMITS_RETAIN_AVAILABLE: 'false', VMQTT_SESSION_QUEUE_QOS0: 'yes', VMQTT_LIMITS_MAX_PACKET_SIZE: '1024',
      VMQTT_SHARED_STRATEGY: 'random', VMQTT_LIMITS_SHARED_SUBSCRIPTIONS: '0',
    } })
    expect(c.limits.retainAvailable).toBe(false)
    expect(c.session.queueQos0).toBe(true)
    expect(c.limits.maxPacketSize).toBe(1024)
    expect(c.shared.strategy).toBe('random')
    expect(c.limits.sharedSubscriptions).toBe(false)
  })

  test('variables without the VMQTT_ prefix are ignored', () => {
    expect(loadConfig({ env: { PATH: '/bin', HOME: '/root', MQTT_PORT: '1' } }).mqtt.port).toBe(1883)
  })

  test('an unknown VMQTT_ variable is rejected by name', () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_MQTT_PROT: '1884' } }))
    expect(msg).toContain('VMQTT_MQTT_PROT')
  })
})

describe('layering', () => {
  test('defaults < file < env < flags', () => {
    const file = tempConfig({ mqtt: { port: 1000, maxConnections: 5 }, log: { level: 'debug' }, data: { dir: '/from-file' } })
    const c = loadConfig({
      file,
      env: { VMQTT_MQTT_PORT: '2000', VMQTT_DATA_DIR: '/from-env' },
      flags: { mqtt: { port: 3000 } },
    })
    expect(c.mqtt.port).toBe(3000)
    expect(c.data.dir).toBe('/from-env')
    expect(c.log.level).toBe('debug')
    expect(c.mqtt.maxConnections).toBe(5)
    expect(c.mqtt.host).toBe('0.0.0.0')
  })

  test('VMQTT_CONFIG names the file; an explicit file wins over it', () => {
    const a = tempConfig({ mqtt: { port: 1111 } })
    const b = tempConfig({ mqtt: { port: 2222 } })
    expect(loadConfig({ env: { VMQTT_CONFIG: a } }).mqtt.port).toBe(1111)
    expect(loadConfig({ file: b, env: { VMQTT_CONFIG: a } }).mqtt.port).toBe(2222)
  })

  test('an unreadable file or invalid JSON is a ConfigError naming the file', () => {
    const missing = join(tmpdir(), `vmqtt-missing-${process.pid}-${Date.now()}.json`)
    expect(configError(() => loadConfig({ file: missing }))).toContain(missing)
    const bad = tempConfig('{ "mqtt": ')
    expect(configError(() => loadConfig({ file: bad }))).toContain(bad)
    const arr = tempConfig('[1, 2]')
    expect(configError(() => loadConfig({ file: arr }))).toContain('object')
  })

  test('an unknown key in the file is rejected by name', () => {
    expect(configError(() => loadConfig({ file: tempConfig({ mqtt: { prot: 1 } }) }))).toContain('mqtt.prot')
    expect(configError(() => loadConfig({ file: tempConfig({ mqttt: {} }) }))).toContain('mqttt')
  })
})

describe('bad values name the key, the value and what is allowed', () => {
  test('port that is not a number', () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_MQTT_PORT: 'abc' } }))
    expect(msg).toContain('mqtt.port')
    expect(msg).toContain('VMQTT_MQTT_PORT')
    expect(msg).toContain('"abc"')
    expect(msg).toContain('0-65535')
    expect(msg).toContain('off')
  })

  test('port out of range', () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_ADMIN_PORT: '70000' } }))
    expect(msg).toContain('admin.port')
    expect(msg).toContain('70000')
    expect(msg).toContain('65535')
  })

  test('log level outside the list', () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_LOG_LEVEL: 'loud' } }))
    expect(msg).toContain('log.level')
    expect(msg).toContain('"loud"')
    for (const level of ['debug', 'info', 'warn', 'error', 'silent']) expect(msg).toContain(level)
  })

  test('integer bounds', () => {
    const high = configError(() => loadConfig({ env: { VMQTT_LIMITS_MAX_QOS: '3' } }))
    expect(high).toContain('limits.maxQos')
    expect(high).toContain('3')
    expect(high).toContain('2')
    const low = configError(() => loadConfig({ file: tempConfig({ limits: { receiveMaximum: 0 } }) }))
    expect(low).toContain('limits.receiveMaximum')
    expect(low).toContain('1')
    const frac = configError(() => loadConfig({ flags: { limits: { maxQos: 1.5 } } }))
    expect(frac).toContain('limits.maxQos')
    expect(frac).toContain('1.5')
    expect(frac).toContain('integer')
  })

  test('admin token: empty, or a bearer token of at least 16 characters', () => {
    expect(loadConfig({ env: { VMQTT_ADMIN_TOKEN: 'abcdefghijklmnop.-_~+/=' } }).admin.token).toBe('abcdefghijklmnop.-_~+/=')
    for (const bad of ['short', 's3cret!token#1234567']) {
      const msg = configError(() => loadConfig({ env: { VMQTT_ADMIN_TOKEN: bad } }))
      expect(msg).toContain('VMQTT_ADMIN_TOKEN')
      expect(msg).toContain('at least 16 characters')
    }
  })

  test('boolean that is not a boolean', () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_LIMITS_RETAIN_AVAILABLE: 'maybe' } }))
    expect(msg).toContain('limits.retainAvailable')
    expect(msg).toContain('"maybe"')
    expect(msg).toContain('boolean')
  })

  test("'off' is only allowed for ports", () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_LIMITS_MAX_QOS: 'off' } }))
    expect(msg).toContain('limits.maxQos')
    expect(msg).toContain('"off"')
  })

  test('empty data dir', () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_DATA_DIR: '' } }))
    expect(msg).toContain('data.dir')
    expect(msg).toContain('""')
  })

  test('every bad key is reported, not just the first', () => {
    const msg = configError(() => loadConfig({ env: { VMQTT_MQTT_PORT: 'abc', VMQTT_LOG_LEVEL: 'loud' } }))
    expect(msg).toContain('mqtt.port')
    expect(msg).toContain('log.level')
  })
})

describe('result', () => {
  test('is deeply frozen', () => {
    const c = loadConfig({ env: { VMQTT_MQTT_PORT: '1884' } })
    expect(Object.isFrozen(c)).toBe(true)
    for (const section of Object.values(c)) expect(Object.isFrozen(section)).toBe(true)
    expect(() => { (c.mqtt as { port: unknown }).port = 1 }).toThrow(TypeError)
    expect(() => { (c.limits as { maxQos: number }).maxQos = 0 }).toThrow(TypeError)
    expect(() => { (c as { extra?: unknown }).extra = {} }).toThrow(TypeError)
    expect(c.mqtt.port).toBe(1884)
  })

  test('loading twice gives independent results', () => {
    const a = loadConfig({ env: { VMQTT_MQTT_PORT: '1' } })
    const b = loadConfig()
    expect(a.mqtt.port).toBe(1)
    expect(b.mqtt.port).toBe(1883)
  })

  test('maskSecrets hides password, secret, token and private key values', () => {
    const masked = maskSecrets({ a: { password: 'p', clientSecret: 's', token: 't', privateKey: 'k', port: 1, host: 'h' } })
    expect(masked).toEqual({ a: { password: '***', clientSecret: '***', token: '***', privateKey: '***', port: 1, host: 'h' } })
  })
})

/**
 * The transports the parameterised suite (test/integration/28-transports.test.ts) runs over. Each
 * entry says how to switch its listener on (env), and how to connect a client that speaks the
 * tiny TestClient interface. TCP, TLS, WS and WSS use MQTT.js (mqttJsClient); a transport MQTT.js
 * does not speak (QUIC) adds one entry with its own client behind the same interface.
 */
import { readFileSync } from 'node:fs'
import mqtt, { type IClientOptions } from 'mqtt'
import type { Duplex } from 'node:stream'
import { QuicMqttClient, quicDuplex } from '../../src/transport/quic-client.ts'
import type { TestCerts } from './certs.ts'
import type { TestBroker } from './start-broker.ts'

export interface TestClientOptions {
  clientId: string
  version: 4 | 5
  /** v4 clean session / v5 clean start (default true). */
  clean?: boolean
  /** v5 Session Expiry Interval in seconds. */
  sessionExpiry?: number
  will?: { topic: string; payload: string; qos?: 0 | 1 | 2 }
}

export interface TestMessage {
  topic: string
  payload: string
  qos: number
  retain: boolean
}

export interface TestClient {
  readonly sessionPresent: boolean
  /** Resolves with the granted QoS of each filter. */
  subscribe(filter: string, qos: 0 | 1 | 2): Promise<number[]>
  /** Resolves once the publish flow is complete (PUBACK / PUBCOMP for QoS 1 / 2). */
  publish(topic: string, payload: string, o?: { qos?: 0 | 1 | 2; retain?: boolean }): Promise<void>
  /** The next message received (in order), or a rejection after ms. */
  nextMessage(ms?: number): Promise<TestMessage>
  /** The reason code of a DISCONNECT from the server (v5), or a rejection after ms. */
  disconnectedBy(ms?: number): Promise<number>
  /** Sends DISCONNECT and closes. */
  end(): Promise<void>
  /** Drops the connection without DISCONNECT (an abnormal close: the will goes out). */
  destroy(): void
}

export interface Transport {
  /** tcp, tls, ws, wss, ... */
  name: string
  /** The broker's name for the listener (Connection.listener): mqtt, mqtts, ws, wss, ... */
  listener: string
  /** VMQTT_* variables that switch this listener on, on 127.0.0.1 and a free port. */
  env(certs: TestCerts): Record<string, string>
  connect(tb: TestBroker, certs: TestCerts, o: TestClientOptions): Promise<TestClient>
}

const tlsEnv = (certs: TestCerts) => ({ VMQTT_TLS_HOST: '127.0.0.1', VMQTT_TLS_PORT: '0', VMQTT_TLS_CERT: certs.server.cert, VMQTT_TLS_KEY: certs.server.key })
const caOf = (certs: TestCerts) => ({ ca: readFileSync(certs.ca.cert, 'utf8') })

export const TRANSPORTS: Transport[] = [
  {
    name: 'tcp', listener: 'mqtt', env: () => ({}),
    connect: (tb, _c, o) => mqttJsClient(`mqtt://127.0.0.1:${tb.broker.portOf('mqtt')}`, o),
  },
  {
    name: 'tls', listener: 'mqtts', env: tlsEnv,
    connect: (tb, c, o) => mqttJsClient(`mqtts://127.0.0.1:${tb.broker.portOf('mqtts')}`, o, caOf(c)),
  },
  {
    name: 'ws', listener: 'ws', env: () => ({ VMQTT_WS_HOST: '127.0.0.1', VMQTT_WS_PORT: '0' }),
    connect: (tb, _c, o) => mqttJsClient(`ws://127.0.0.1:${tb.broker.portOf('ws')}/mqtt`, o),
  },
  {
    name: 'wss', listener: 'wss', env: (c) => ({ ...tlsEnv(c), VMQTT_WS_HOST: '127.0.0.1', VMQTT_WSS_PORT: '0' }),
    connect: (tb, c, o) => mqttJsClient(`wss://127.0.0.1:${tb.broker.portOf('wss')}/mqtt`, o, caOf(c)),
  },
  {
    // MQTT.js on our QUIC client (QuicMqttClient as a Duplex): MQTT.js has no QUIC transport
    name: 'quic', listener: 'quic',
    env: (c) => ({ ...tlsEnv(c), VMQTT_QUIC_HOST: '127.0.0.1', VMQTT_QUIC_PORT: '0' }),
    connect: async (tb, c, o) => {
      const q = await QuicMqttClient.connect('127.0.0.1', tb.broker.portOf('quic'), { ca: c.ca.cert })
      return mqttJsClient(() => quicDuplex(q), o)
    },
  },
]

/** Environment for a broker with every listener of `transports` on (and no fixed port taken). */
export function transportsEnv(certs: TestCerts, transports: Transport[] = TRANSPORTS): Record<string, string> {
  const env: Record<string, string> = { VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off' }
  for (const t of transports) Object.assign(env, t.env(certs))
  return env
}

/** A TestClient on MQTT.js (mqtt://, mqtts://, ws://, wss://). */
export async function mqttJsClient(url: string | (() => Duplex), o: TestClientOptions, extra: IClientOptions = {}): Promise<TestClient> {
  const opts: IClientOptions = {
    clientId: o.clientId, protocolVersion: o.version, clean: o.clean ?? true, reconnectPeriod: 0, connectTimeout: 3000, ...extra,
  }
  if (o.sessionExpiry !== undefined) opts.properties = { sessionExpiryInterval: o.sessionExpiry }
  if (o.will !== undefined) opts.will = { topic: o.will.topic, payload: Buffer.from(o.will.payload), qos: o.will.qos ?? 0, retain: false }
  // listeners go on before the CONNACK: a resumed session's queued messages follow it at once
  // a stream builder: MQTT.js over a transport it does not know (QUIC)
  const c = typeof url === 'string' ? mqtt.connect(url, opts) : new mqtt.MqttClient(url, opts)
  let sessionPresent = false
  const messages: TestMessage[] = []
  const disconnects: number[] = []
  let wake = () => {}
  c.on('message', (topic, payload, p) => { messages.push({ topic, payload: payload.toString(), qos: p.qos, retain: p.retain }); wake() })
  c.on('disconnect', (p) => { disconnects.push(p.reasonCode ?? 0); wake() })
  await new Promise<void>((resolve, reject) => {
    c.once('connect', (ack) => { sessionPresent = ack.sessionPresent; resolve() })
    c.once('error', (e) => { c.end(true); reject(e) })
    c.once('close', () => reject(new Error(`${o.clientId}: ${url} closed before CONNACK`)))
  })
  const until = <T>(take: () => T | undefined, what: string, ms: number) => new Promise<T>((resolve, reject) => {
    const ready = take()
    if (ready !== undefined) return resolve(ready)
    const timer = setTimeout(() => { wake = () => {}; reject(new Error(`${o.clientId}: no ${what} within ${ms}ms`)) }, ms)
    wake = () => {
      const v = take()
      if (v === undefined) return
      clearTimeout(timer)
      wake = () => {}
      resolve(v)
    }
  })
  return {
    get sessionPresent() { return sessionPresent },
    subscribe: async (filter, qos) => (await c.subscribeAsync(filter, { qos })).map((g) => g.qos),
    publish: async (topic, payload, p = {}) => { await c.publishAsync(topic, payload, { qos: p.qos ?? 0, retain: p.retain ?? false }) },
    nextMessage: (ms = 3000) => until(() => messages.shift(), 'message', ms),
    disconnectedBy: (ms = 3000) => until(() => disconnects.shift(), 'DISCONNECT', ms),
    end: async () => { await c.endAsync() },
    destroy: () => { c.stream.destroy(); c.end(true) },
  }
}

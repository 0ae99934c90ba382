import { createBroker, type Broker, type BrokerOptions } from '../../src/broker/broker.ts'
import { loadConfig } from '../../src/config/load.ts'

export interface TestBroker extends AsyncDisposable {
  broker: Broker
  port: number
  url: string
  close(): Promise<void>
}

/**
 * Starts an in-process broker on 127.0.0.1 with an ephemeral port. `env` takes VMQTT_*
 * variables exactly as a user would set them. Use with `await using b = await startBroker()`.
 */
export async function startBroker(env: Record<string, string> = {}, opts: BrokerOptions = {}): Promise<TestBroker> {
  const config = loadConfig({
    env: {
      VMQTT_MQTT_HOST: '127.0.0.1', VMQTT_MQTT_PORT: '0', VMQTT_WS_PORT: 'off', VMQTT_WSS_PORT: 'off', VMQTT_QUIC_PORT: 'off', VMQTT_ADMIN_PORT: 'off',
      VMQTT_LOG_LEVEL: process.env.VMQTT_TEST_LOG ?? 'silent', VMQTT_SYS_INTERVAL: '0', VMQTT_DATA_STORE: 'memory', ...env,
    },
  })
  const broker = createBroker(config, opts)
  await broker.start()
  const close = () => broker.close()
  return { broker, port: broker.port, url: `mqtt://127.0.0.1:${broker.port}`, close, [Symbol.asyncDispose]: close }
}

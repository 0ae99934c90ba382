import { defineCommand } from 'citty'

/** `vmqtt bench --quic ...`: measures a running broker's MQTT-over-QUIC listener (see quic-bench.ts). */
export const bench = defineCommand({
  meta: { name: 'bench', description: 'Measure a running broker: --quic (connections/s, throughput on one connection and with 100/500/1000 clients)' },
  args: {
    quic: { type: 'boolean', description: 'benchmark the MQTT-over-QUIC listener (the only mode so far)' },
    host: { type: 'string', default: '127.0.0.1', description: 'broker host' },
    port: { type: 'string', default: '14567', description: 'QUIC (UDP) port' },
    ca: { type: 'string', description: 'PEM file of the CA that signed the broker certificate' },
    cert: { type: 'string', description: 'client certificate PEM file (mutual TLS)' },
    key: { type: 'string', description: 'client key PEM file (mutual TLS)' },
    servername: { type: 'string', description: 'TLS server name (default: host, or localhost for an address)' },
    clients: { type: 'string', default: '100,500,1000', description: 'connected-client counts to measure with' },
    seconds: { type: 'string', default: '5', description: 'seconds per throughput measurement' },
    connections: { type: 'string', default: '300', description: 'connections opened for the connections/s figure' },
    payload: { type: 'string', default: '64', description: 'payload bytes per message' },
    window: { type: 'string', default: '1000', description: 'QoS 0 messages in flight per publishing client' },
    json: { type: 'boolean', description: 'print the result as JSON at the end' },
  },
  async run({ args }) {
    if (!args.quic) {
      process.stderr.write('vmqtt bench: only --quic is implemented (the TCP/TLS/WS benchmark suite is scripts/bench.ts)\n')
      process.exit(2)
    }
    const num = (name: string, v: string) => {
      const n = Number(v)
      if (!Number.isInteger(n) || n < 0) { process.stderr.write(`vmqtt bench: --${name} must be a whole number, got ${v}\n`); process.exit(2) }
      return n
    }
    // loaded on use: node:quic stays out of every other command
    const { runQuicBench } = await import('./quic-bench.ts')
    const result = await runQuicBench({
      host: args.host, port: num('port', args.port),
      tls: {
        ...(args.ca !== undefined ? { ca: args.ca } : {}),
        ...(args.cert !== undefined && args.key !== undefined ? { cert: args.cert, key: args.key } : {}),
        ...(args.servername !== undefined ? { servername: args.servername } : {}),
      },
      clients: args.clients.split(',').filter((x) => x !== '').map((x) => num('clients', x)),
      seconds: num('seconds', args.seconds), connections: num('connections', args.connections),
      payload: num('payload', args.payload), window: Math.max(1, num('window', args.window)),
      out: (line) => process.stdout.write(`${line}\n`),
    })
    if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`)
    process.exit(0)
  },
})

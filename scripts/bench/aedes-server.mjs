// Aedes (npm), in memory (its default aedes-persistence), on Node.js: the comparison broker of
// the benchmark suite. Usage: node scripts/bench/aedes-server.mjs [port]  (0 = any free port).
// Logs {"msg":"mqtt listening","port":N} like vmqtt; SIGTERM/SIGINT close it.
import net from 'node:net'
import { Aedes } from 'aedes'

const broker = await Aedes.createBroker()
const server = net.createServer(broker.handle)
server.listen(Number(process.argv[2] ?? 1883), '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'mqtt listening', port: server.address().port }))
})
broker.on('clientError', () => {})
broker.on('connectionError', () => {})
const stop = () => { server.close(); broker.close(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref() }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)

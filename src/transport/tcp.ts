import type { Accept, ConnectionSink, Listener } from './types.ts'

/** Plain TCP listener on Bun.listen. Bun's socket is the MqttSocket itself and its data slot
 * holds the connection: nothing else is allocated per connection. */
export function listenTcp(host: string, port: number, accept: Accept): Listener {
  const server = Bun.listen<ConnectionSink | null>({
    hostname: host,
    port,
    socket: {
      open(socket) {
        socket.data = accept(socket, 'mqtt')
      },
      data(socket, chunk) {
        socket.data?.data(chunk)
      },
      drain(socket) {
        socket.data?.drain()
      },
      close(socket) {
        const sink = socket.data
        socket.data = null
        sink?.close()
      },
      error(socket) {
        const sink = socket.data
        socket.data = null
        sink?.close()
      },
    },
  })
  return {
    name: 'mqtt',
    host,
    port: server.port,
    stop: (force = false) => server.stop(force),
  }
}

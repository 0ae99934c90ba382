import type { Accept, ConnectionSink, Listener } from './types.ts'

/** A Bun socket whose data slot holds the connection's sink. */
interface SinkSocket { data: ConnectionSink | null }

const detach = (socket: SinkSocket) => {
  const sink = socket.data
  socket.data = null
  sink?.close()
}

/** Bun socket handlers that forward to the sink in the socket's data slot (TCP and TLS). */
export const sinkHandlers = {
  data(socket: SinkSocket, chunk: Buffer) {
    socket.data?.data(chunk)
  },
  drain(socket: SinkSocket) {
    socket.data?.drain()
  },
  close: detach,
  error: detach,
}

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
      ...sinkHandlers,
    },
  })
  return {
    name: 'mqtt',
    host,
    port: server.port,
    stop: (force = false) => server.stop(force),
  }
}

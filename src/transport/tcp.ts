import type { Socket } from 'bun'
import type { Accept, ConnectionSink, Listener, MqttSocket } from './types.ts'

interface Data {
  sink: ConnectionSink | null
}

/** Plain TCP listener on Bun.listen. */
export function listenTcp(host: string, port: number, accept: Accept): Listener {
  const server = Bun.listen<Data>({
    hostname: host,
    port,
    socket: {
      open(socket) {
        const wrapped: MqttSocket = {
          write: (d) => socket.write(d),
          end: () => socket.end(),
          remoteAddress: socket.remoteAddress,
        }
        socket.data = { sink: accept(wrapped) }
      },
      data(socket, chunk) {
        socket.data.sink?.data(chunk)
      },
      drain(socket) {
        socket.data.sink?.drain()
      },
      close(socket) {
        const sink = socket.data.sink
        socket.data.sink = null
        sink?.close()
      },
      error(socket) {
        const sink = socket.data.sink
        socket.data.sink = null
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

export type { Socket }

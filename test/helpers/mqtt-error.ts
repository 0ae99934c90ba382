import { MqttError } from '../../src/codec/reason-codes.ts'

/** Runs fn and returns the reason code of the MqttError it throws; fails if it throws anything
 * else or nothing (`what` names the input in that message). */
export function reasonOf(fn: () => unknown, what = 'the input'): number {
  try {
    fn()
  } catch (e) {
    if (e instanceof MqttError) return e.code
    throw new Error(`expected MqttError, got ${String(e)}`)
  }
  throw new Error(`expected MqttError, ${what} was accepted`)
}

/** Runs fn and returns the message of the error it throws; fails if it throws nothing. */
export function errorOf(fn: () => unknown): string {
  try {
    fn()
  } catch (e) {
    return (e as Error).message
  }
  throw new Error('expected an error')
}

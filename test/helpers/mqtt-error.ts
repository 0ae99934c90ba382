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

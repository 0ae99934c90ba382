/** Every scenario of the suite, in the order they run. */
import { connScale } from './conn-scale.ts'
import { latency } from './latency.ts'
import { qos1w1, qos1w64, qos2w1, qos2w64 } from './pairs.ts'
import { persistent } from './persistent.ts'
import { fanIn, fanOut, fanOutAll, fanOutDevices, large, qos0Pairs } from './qos0.ts'
import type { Scenario } from './types.ts'

export const SCENARIOS: Scenario[] = [fanIn, fanOut, qos1w64, qos1w1, qos2w64, qos2w1, latency, connScale, persistent, large]

/** Not in the default list: qos0-pairs is run by the latency scenario to find its rate; both on request. */
export const EXTRA_SCENARIOS: Scenario[] = [qos0Pairs, fanOutAll, fanOutDevices]

export function scenarioByName(name: string): Scenario | undefined {
  return [...SCENARIOS, ...EXTRA_SCENARIOS].find((s) => s.name === name)
}

export { qos0Pairs }
export type { Scenario }

/** The checks of the kill -9 torture test (see torture.ts): loss, duplicates, order, retained state. */

export interface AnalysisInput {
  publishers: { id: string; qos: 1 | 2; ackedData: readonly number[]; lastAckedRetained: number; nextSeq: number; republished?: ReadonlySet<number> }[]
  subscribers: { id: string; arrivals: ReadonlyMap<string, readonly number[]> }[]
  /** Retained message found per publisher id at the end. */
  retained: ReadonlyMap<string, { seq: number; retain: boolean }>
}

export interface Analysis {
  expectedDeliveries: number
  delivered: number
  duplicates: { qos1: number; qos2: number }
  losses: number
  orderViolations: number
  retainedMismatches: number
  unknown: number
  problems: string[]
}

/**
 * The checks, per (subscriber, publisher) pair:
 * - every data message the broker acknowledged arrived at least once (no loss);
 * - QoS 2: nothing arrived twice; QoS 1: duplicates are allowed;
 * - order: drop every arrival of a sequence number already seen, and the remaining "first
 *   deliveries" must be strictly increasing. Why this definition: each publisher sends on one
 *   topic, so [MQTT-4.6.0-5]/(v3.1.1 4.6.0-6) ordered topics require its messages to reach a
 *   subscriber in publish order. A resend after a reconnect (DUP, or the broker's own resend of
 *   unacknowledged deliveries) legitimately repeats messages already delivered, and a publisher
 *   resending after a crash may repeat one the broker had accepted without acking. Those
 *   repeats are duplicates, allowed at QoS 1, so order is judged on first deliveries only: a
 *   message may never be delivered for the first time after a later one was. Gaps are allowed
 *   (every 5th sequence number goes to the retained topic);
 * - retained: the retained topic of each publisher holds its last acknowledged value.
 */
export function analyse(input: AnalysisInput): Analysis {
  const a: Analysis = { expectedDeliveries: 0, delivered: 0, duplicates: { qos1: 0, qos2: 0 }, losses: 0, orderViolations: 0, retainedMismatches: 0, unknown: 0, problems: [] }
  const problem = (s: string) => { if (a.problems.length < 30) a.problems.push(s) }
  for (const sub of input.subscribers) {
    for (const pub of input.publishers) {
      const arrivals = sub.arrivals.get(pub.id) ?? []
      const seen = new Set<number>()
      let last = 0
      let dups = 0
      for (const seq of arrivals) {
        if (seen.has(seq)) { dups++; continue }
        seen.add(seq)
        // refused and published again later: a later message may legitimately have gone first
        if (pub.republished?.has(seq) === true) continue
        if (seq <= last) { a.orderViolations++; problem(`order: ${sub.id} got ${pub.id}:${seq} first after ${pub.id}:${last}`) }
        if (seq >= pub.nextSeq || seq <= 0) { a.unknown++; problem(`unknown: ${sub.id} got ${pub.id}:${seq}, never published`) }
        last = Math.max(last, seq)
      }
      if (pub.qos === 1) a.duplicates.qos1 += dups
      else {
        a.duplicates.qos2 += dups
        if (dups > 0) problem(`QoS 2 duplicates: ${sub.id} got ${dups} messages of ${pub.id} twice`)
      }
      let lost = 0
      for (const seq of pub.ackedData) {
        a.expectedDeliveries++
        if (seen.has(seq)) a.delivered++
        else if (lost++ < 3) problem(`loss: ${sub.id} never got acknowledged ${pub.id}:${seq}`)
      }
      a.losses += lost
    }
  }
  for (const pub of input.publishers) {
    const got = input.retained.get(pub.id)
    const want = pub.lastAckedRetained
    if ((got?.seq ?? 0) !== want || (got !== undefined && !got.retain)) {
      a.retainedMismatches++
      problem(`retained: torture/r/${pub.id} holds ${got === undefined ? 'nothing' : `${got.seq}${got.retain ? '' : ' without RETAIN'}`}, last acknowledged ${want}`)
    }
  }
  return a
}

import { RC } from '../codec/reason-codes.ts'
import type { ConnectionSink } from '../transport/types.ts'
import type { Broker } from './broker.ts'
import type { Connection } from './connection.ts'
import { identity } from '../auth/audit.ts'

/**
 * Limits against hostile or broken clients: open connections and new connections per second
 * per IP address (mqtt.maxConnectionsPerAddress, mqtt.connectRatePerAddress), PUBLISH messages
 * and bytes per second per connection (limits.publishRate, limits.publishBytesRate), and the
 * unsent output a client that does not read may pile up (limits.maxPendingBytes).
 * With every limit at 0 nothing is allocated and each check is one or two comparisons.
 */

/** Addresses tracked at most; beyond it (after dropping idle ones) a new address is not limited. */
const MAX_ADDRESSES = 100_000
/** At most one log line and one audit event per address per this many ms for refusals. */
const WARN_EVERY_MS = 1000
/** QoS 0 messages are dropped for a slow consumer when no output cap is set. */
const SLOW_CONSUMER_BYTES = 16 * 1024 * 1024

/** Connections refused and clients closed by these limits (since start). */
export interface LimitCounters {
  /** New connections refused: too many open from the address. */
  refusedPerAddress: number
  /** New connections refused: connection rate of the address exceeded. */
  refusedRate: number
  /** Clients closed for publishing too many messages per second. */
  publishRate: number
  /** Clients closed for publishing too many bytes per second. */
  publishBytesRate: number
  /** Clients closed because their unsent output passed limits.maxPendingBytes. */
  slowConsumers: number
  /** Connections closed because a started packet did not complete within limits.packetTimeout. */
  packetTimeouts: number
}

/** One IP address: open connections and its connection-rate token bucket. */
export class AddressEntry {
  readonly address: string
  open = 0
  /** Connections it may still open now (refilled at connectRatePerAddress per second). */
  tokens: number
  /** When tokens were last refilled (ms). */
  at: number
  /** Last refusal logged (ms), and refusals since then. */
  warnedAt = 0
  refused = 0

  constructor(address: string, tokens: number, now: number) {
    this.address = address
    this.tokens = tokens
    this.at = now
  }
}

class BrokerLimits {
  readonly counters: LimitCounters = { refusedPerAddress: 0, refusedRate: 0, publishRate: 0, publishBytesRate: 0, slowConsumers: 0, packetTimeouts: 0 }
  readonly addresses = new Map<string, AddressEntry>()
  /** The table was full: logged once per WARN_EVERY_MS. */
  fullWarnedAt = 0
}

const state = new WeakMap<Broker, BrokerLimits>()

function limitsOf(broker: Broker): BrokerLimits {
  let l = state.get(broker)
  if (l === undefined) state.set(broker, l = new BrokerLimits())
  return l
}

/** Counters of connections refused and clients closed by the limits. */
export function limitCounters(broker: Broker): Readonly<LimitCounters> {
  return limitsOf(broker).counters
}

/** The sink of a refused connection: whatever it still sends is ignored (shared, allocates nothing). */
export const REFUSED: ConnectionSink = { data() {}, drain() {}, close() {} }

/** IPv4 clients on a dual-stack listener show up as ::ffff:a.b.c.d: count them as a.b.c.d. */
function normalise(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}

/**
 * Admits a new connection from `address` against the per-address limits. Returns the entry the
 * connection counts under (give it back with releaseAddress when it closes), null when the
 * per-address limits are off (or the address table is full), or false when it must be refused:
 * the refusal is logged (warn) and audited ('kick') at most once per address per second.
 */
export function admitAddress(broker: Broker, socket: { readonly remoteAddress: string }, listener: string): AddressEntry | null | false {
  const { maxConnectionsPerAddress: max, connectRatePerAddress: rate } = broker.config.mqtt
  if (max === 0 && rate === 0) return null
  const lim = limitsOf(broker)
  // read only here: each read of a Bun socket's remoteAddress makes a string
  const address = normalise(socket.remoteAddress ?? '')
  const now = Date.now()
  let e = lim.addresses.get(address)
  if (e === undefined) {
    if (lim.addresses.size >= MAX_ADDRESSES) pruneAddresses(broker, now)
    if (lim.addresses.size >= MAX_ADDRESSES) {
      // millions of addresses (an IPv6 range): per-address limits cannot help; stay bounded
      if (now - lim.fullWarnedAt >= WARN_EVERY_MS) {
        lim.fullWarnedAt = now
        broker.log.warn('per-address limits: address table full, new address not limited', { addresses: lim.addresses.size })
      }
      return null
    }
    e = new AddressEntry(address, rate, now)
    lim.addresses.set(address, e)
  }
  let why: string | null = null
  if (max > 0 && e.open >= max) {
    why = `more than ${max} open connections from the address`
    lim.counters.refusedPerAddress++
  } else if (rate > 0) {
    e.tokens = Math.min(rate, e.tokens + ((now - e.at) * rate) / 1000)
    e.at = now
    // a refused attempt takes no token: a client retrying in a loop gets in at the configured rate
    if (e.tokens < 1) {
      why = `more than ${rate} new connections per second from the address`
      lim.counters.refusedRate++
    } else {
      e.tokens -= 1
    }
  }
  if (why === null) {
    e.open++
    return e
  }
  e.refused++
  if (now - e.warnedAt >= WARN_EVERY_MS) {
    broker.log.warn('connection refused', { remote: address, listener, reason: why, refused: e.refused })
    broker.security?.audit.event('kick', { address, listener, reason: why, refused: e.refused })
    e.warnedAt = now
    e.refused = 0
  }
  if (e.open === 0 && rate === 0) lim.addresses.delete(address)
  return false
}

/** A connection counted by admitAddress has closed. */
export function releaseAddress(broker: Broker, e: AddressEntry): void {
  e.open--
  // with a rate limit the entry stays until its bucket is full again (pruneAddresses)
  if (e.open <= 0 && broker.config.mqtt.connectRatePerAddress === 0) limitsOf(broker).addresses.delete(e.address)
}

/** Drops addresses with no open connection whose rate bucket has refilled (run from the sweep). */
export function pruneAddresses(broker: Broker, now: number): void {
  const l = state.get(broker)
  if (l === undefined || l.addresses.size === 0) return
  // a bucket refills completely within one second; the last refusal log line is also 1 s old then
  for (const [k, e] of l.addresses) {
    if (e.open <= 0 && now - e.at >= 1000 && now - e.warnedAt >= WARN_EVERY_MS) l.addresses.delete(k)
  }
}

/**
 * Token buckets of limits.publishRate (messages) and limits.publishBytesRate (bytes of the
 * PUBLISH packet after the fixed header), one second deep, kept in three number fields of the
 * connection (in its Extras, created on the first limited PUBLISH). A message is over the limit when the message bucket holds less than one token or
 * the bytes bucket is empty (a single PUBLISH larger than one second's worth goes through a full
 * bucket and leaves it in debt). Over a limit: v5 DISCONNECT 0x96 Message rate too high / 0x97
 * Quota exceeded, v3 the connection is closed. Returns true when the connection was closed.
 */
export function overPublishRate(conn: Connection, bytes: number): boolean {
  const lim = conn.broker.config.limits
  const rate = lim.publishRate
  const bytesRate = lim.publishBytesRate
  if (rate === 0 && bytesRate === 0) return false
  const now = Date.now()
  const first = conn.pubAt === 0
  const elapsed = now - conn.pubAt
  conn.pubAt = now
  if (rate > 0) {
    const t = first ? rate : Math.min(rate, conn.pubTokens + (elapsed * rate) / 1000)
    if (t < 1) {
      conn.pubTokens = t
      kick(conn, RC.MESSAGE_RATE_TOO_HIGH, `more than ${rate} PUBLISH per second`, 'publishRate')
      return true
    }
    conn.pubTokens = t - 1
  }
  if (bytesRate > 0) {
    const t = first ? bytesRate : Math.min(bytesRate, conn.pubByteTokens + (elapsed * bytesRate) / 1000)
    if (t <= 0) {
      conn.pubByteTokens = t
      kick(conn, RC.QUOTA_EXCEEDED, `more than ${bytesRate} PUBLISH bytes per second`, 'publishBytesRate')
      return true
    }
    conn.pubByteTokens = t - bytes
  }
  return false
}

function kick(conn: Connection, code: number, reason: string, counter: 'publishRate' | 'publishBytesRate'): void {
  const broker = conn.broker
  limitsOf(broker).counters[counter]++
  const address = conn.socket.remoteAddress
  broker.log.warn('closing connection: publish limit exceeded', { clientId: conn.clientId, remote: address, reason })
  broker.security?.audit.event('kick', { ...identity(conn), reason })
  conn.disconnect(code, reason)
}

/**
 * Output a QoS 0 message may find queued before it is dropped for a slow consumer: a quarter of
 * limits.maxPendingBytes (16 MiB at the 64 MiB default), so a client only ever falls behind
 * with QoS 1/2 messages when it is disconnected, and QoS 0 alone never gets it there.
 */
export function qos0DropBytes(maxPendingBytes: number): number {
  return maxPendingBytes > 0 ? maxPendingBytes / 4 : SLOW_CONSUMER_BYTES
}

/** Logs, audits and counts a client closed for not reading (called by the connection). */
export function slowConsumer(conn: Connection, pending: number): void {
  const broker = conn.broker
  limitsOf(broker).counters.slowConsumers++
  const cap = broker.config.limits.maxPendingBytes
  const address = conn.socket.remoteAddress
  broker.log.warn('closing connection: client does not read its messages', { clientId: conn.clientId || undefined, remote: address, pending, maxPendingBytes: cap })
  broker.security?.audit.event('kick', { ...identity(conn), reason: `more than ${cap} bytes of unsent output` })
}

/** Counts a connection closed by limits.packetTimeout. */
export function packetTimedOut(broker: Broker): void {
  limitsOf(broker).counters.packetTimeouts++
}

import type { IConnectPacket, Packet, QoS } from 'mqtt-packet'
import type { Message } from '../../codec/message.ts'
import { encodePacket, peekConnect, type ConnectPeek, type WillPropsRaw } from '../../codec/packets.ts'
import { encodeUserProps } from '../../codec/properties.ts'
import { connackCodeV3, MqttError, RC } from '../../codec/reason-codes.ts'
import { controlCharacterError, topicNameError } from '../../topic/validate.ts'
import type { Broker } from '../broker.ts'
import type { Connection } from '../connection.ts'
import { drainQueue, resendInflight } from '../deliver.ts'
import { setReader } from '../read-access.ts'
import type { Session } from '../../session/session.ts'
import type { Security } from '../../auth/security.ts'
import type { AuthResult } from '../../auth/types.ts'
import { runAuthStep } from './auth.ts'
import { clip, identity } from '../../auth/audit.ts'
import { isSysTopic } from './publish.ts'
import { checkOwnership } from '../ownership.ts'

/** [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01 and close; [MQTT-3.1.2-1] a wrong
 * protocol name: close without CONNACK. */
export function rejectProtocol(conn: Connection, peek: ConnectPeek): void {
  conn.broker.log.warn('refusing CONNECT: unsupported protocol', {
    remote: conn.socket.remoteAddress, protocol: peek.protocolName, level: peek.level,
  })
  if (peek.protocolName === 'MQTT' || peek.protocolName === 'MQIsdp') conn.send(Buffer.from([0x20, 2, 0, 1]))
  conn.end()
}

/** Sends a refusing CONNACK with the reason code (mapped for v3) and closes [MQTT-3.2.2-7].
 * `detail` goes to the log and the audit log only, never to the client. */
export function refuse(conn: Connection, code: number, reason: string, detail?: string): void {
  if (conn.state === 'closed') return
  logRefused(conn, code, reason, detail)
  if (conn.v5) conn.sendPacket({ cmd: 'connack', sessionPresent: false, reasonCode: code, properties: { reasonString: reason } })
  else conn.sendPacket({ cmd: 'connack', sessionPresent: false, returnCode: connackCodeV3(code) })
  conn.end()
}

/** The log and audit line of a refused CONNECT: a client can repeat one at will, so a few lines
 * a second per address, fields cut short. */
function logRefused(conn: Connection, code: number, reason: string, detail?: string): void {
  const suppressed = conn.broker.lineThrottle.take(`refused\u0000${conn.socket.remoteAddress}`)
  if (suppressed < 0) return
  const fields = { ...identity(conn), reason: `0x${code.toString(16)}`, error: reason, detail: clip(detail), ...(suppressed > 0 ? { suppressed } : {}) }
  conn.broker.log.info('connection refused', fields)
  conn.broker.security?.audit.event('connect-failed', fields)
}

/**
 * A CONNECT field the spec lets us refuse (a control character, an invalid will topic): v5
 * CONNACK with the reason code; v3 has no fitting code, the connection is closed (as Mosquitto
 * does) [MQTT-4.8.0-1].
 */
function refuseString(conn: Connection, code: number, reason: string): void {
  if (conn.v5) return refuse(conn, code, reason)
  if (conn.state === 'closed') return
  logRefused(conn, code, reason)
  conn.end()
}

/** A CONNECT refused by the framer (over limits.maxConnectPacketSize) as soon as its length was
 * read: a v5 client (level 5 in the same chunk) gets CONNACK 0x95, any other is just closed. */
export function refuseLargeConnect(conn: Connection, first: Buffer, e: unknown): void {
  if (!(e instanceof MqttError) || e.code !== RC.PACKET_TOO_LARGE || first[0] !== 0x10) return conn.fail(e)
  let i = 1
  while (i < 5 && i < first.length && (first[i]! & 0x80) !== 0) i++
  const peek = peekConnect(first.subarray(i + 1))
  if (peek === null || peek.level !== 5) return conn.fail(e)
  conn.version = 5
  refuse(conn, RC.PACKET_TOO_LARGE, e.message)
}

let assigned = 0
function assignClientId(): string {
  assigned = (assigned + 1) % 1e9
  return `vmqtt-${Date.now().toString(36)}-${assigned.toString(36)}-${Math.random().toString(36).slice(2, 8)}`
}

const pending = new WeakMap<Connection, { packet: IConnectPacket; assignedId: boolean }>()

/** CONNECT, step by step: validate, identify, authenticate, take over, attach session, CONNACK. */
export function handleConnect(conn: Connection, packet: Packet | null): void | Promise<void> {
  if (packet === null) return
  const p = packet as IConnectPacket
  const props = p.properties ?? {}
  if (conn.v5) {
    // [MQTT-3.1.2-?] Receive Maximum and Maximum Packet Size of 0 are protocol errors
    if (props.receiveMaximum === 0) return refuse(conn, RC.PROTOCOL_ERROR, 'Receive Maximum of 0')
    if (props.maximumPacketSize === 0) return refuse(conn, RC.PROTOCOL_ERROR, 'Maximum Packet Size of 0')
  } else if (p.password !== undefined && p.username === undefined) {
    // [MQTT-3.1.2-22] v3.1.1: a password requires a user name
    throw new MqttError(RC.MALFORMED_PACKET, 'password flag set without user name flag')
  }
  if (p.will !== undefined && (p.will.qos as number) === 3) throw new MqttError(RC.MALFORMED_PACKET, 'will QoS 3')
  // control characters in a client id or user name would reach logs, audit lines and the admin
  // API: refused unless limits.allowControlCharacters (spec 1.5.3 / 1.5.4: a receiver MAY close)
  if (!conn.broker.config.limits.allowControlCharacters) {
    const badId = controlCharacterError(p.clientId)
    if (badId !== null) return refuseString(conn, RC.CLIENT_IDENTIFIER_NOT_VALID, `client identifier ${badId}`)
    const badUser = p.username === undefined ? null : controlCharacterError(p.username)
    if (badUser !== null) return refuseString(conn, RC.BAD_USER_NAME_OR_PASSWORD, `user name ${badUser}`)
  }
  let assignedId = false
  if (p.clientId.length === 0) {
    // [MQTT-3.1.3-8] v3.1.1 with clean session 0 and an empty client id is refused with 0x02
    if (!conn.v5 && (!p.clean || conn.version === 3)) return refuse(conn, RC.CLIENT_IDENTIFIER_NOT_VALID, 'empty client identifier requires clean session')
    // [MQTT-3.1.3-6] the server assigns a unique client identifier
    p.clientId = assignClientId()
    assignedId = true
  }
  conn.clientId = p.clientId
  conn.username = p.username
  if (props.authenticationMethod !== undefined) {
    const method = conn.broker.authMethods.get(props.authenticationMethod)
    // [MQTT-4.12.0-1] an unsupported authentication method gets CONNACK 0x8C
    if (method === undefined) return refuse(conn, RC.BAD_AUTHENTICATION_METHOD, `authentication method ${props.authenticationMethod} is not supported`)
    conn.authMethod = props.authenticationMethod
    conn.state = 'authenticating'
    pending.set(conn, { packet: p, assignedId })
    return runAuthStep(conn, props.authenticationData, false)
  }
  const sec = conn.broker.security
  if (sec !== null && !(sec.authenticators.length === 0 && sec.anonymous)) return authenticate(conn, sec, p, assignedId)
  return complete(conn, p, assignedId, undefined)
}

const NO_TURN = { suspect: false, trusted: false, done() {} }

/** The authentication chain; a refusal waits longer with each failure from the address and
 * username. Checks from an address or username inside its failure delay wait for it first, so
 * that guessers in parallel get no extra password verifications (security.loginTurn). */
async function authenticate(conn: Connection, sec: Security, p: IConnectPacket, assignedId: boolean): Promise<void> {
  const address = conn.socket.remoteAddress
  const password = p.password === undefined ? undefined : Buffer.isBuffer(p.password) ? p.password : Buffer.from(p.password)
  // only a password (or token) costs a check worth queueing; the others are answered at once
  const deadline = connectDeadline(conn)
  const turn = password === undefined ? NO_TURN : await sec.loginTurn(address, p.username, deadline)
  // closed while waiting for its turn: nothing was checked, nothing learned, nothing counted
  if (conn.state === 'closed') { turn?.done(); return }
  if (turn === null) { sec.loginBusy(address); return refuse(conn, RC.SERVER_BUSY, 'server busy', 'too many logins waiting from this address') }
  let r: AuthResult
  try {
    r = await sec.authenticate({ clientId: p.clientId, username: p.username, password, address, listener: conn.listener, cert: conn.socket.peerCertificate?.(), suspect: turn.suspect, trusted: turn.trusted, deadline, abandoned: () => conn.state === 'closed' })
  } catch (e) {
    conn.broker.log.error('authentication error', { clientId: p.clientId, error: String((e as Error)?.stack ?? e) })
    r = { decision: 'deny', reason: RC.UNSPECIFIED_ERROR, detail: `authenticator failed: ${(e as Error).message}` }
  } finally {
    turn.done()
  }
  // closed while its check waited in the pool: skipped (busy), nothing learned, not a failure
  // (else an attacker who slows the pool turns a victim's own timeouts into failures)
  const skipped = r.decision === 'deny' && r.reason === RC.SERVER_BUSY
  if ((conn.state as string) === 'closed') return skipped ? undefined : abandoned(conn, sec, p.username, password)
  // no slot for a password check (auth.maxQueuedVerifications): busy, not a failed login
  if (r.decision === 'deny' && r.reason === RC.SERVER_BUSY) { sec.loginBusy(address); return refuse(conn, RC.SERVER_BUSY, 'server busy', r.detail) }
  if (r.decision === 'allow') {
    // an address with recent failures waits on success too: the delay must not give the answer away
    const delay = loginDelay(conn, p.username, false)
    if (delay > 0) await Bun.sleep(delay)
    if ((conn.state as string) === 'closed') return abandoned(conn, sec, p.username, password)
    if (r.username !== undefined) conn.username = r.username
    conn.acl = r.acl ?? null
    complete(conn, p, assignedId, undefined)
    if (r.expiresAt !== undefined && conn.state === 'connected') endAtExpiry(conn, r.expiresAt)
    return
  }
  const code = r.reason ?? RC.BAD_USER_NAME_OR_PASSWORD
  return refuseLogin(conn, code, code === RC.NOT_AUTHORIZED ? 'not authorized' : 'bad user name or password', r.detail)
}

/** A login with a password whose connection the client closed after its check ran and before
 * its answer counts as a failure, whatever the check found (the address becomes suspect; the record does not tell the
 * result). Not when the broker closed it (connect timeout, memory relief, shutdown): the client
 * did not give up, the broker was too slow. */
function abandoned(conn: Connection, sec: Security, username: string | undefined, password: Buffer | undefined): void {
  if (password !== undefined && conn.peerClosed) sec.loginDelay(conn.socket.remoteAddress, username, true)
}

const expiryTimers = new WeakMap<Connection, ReturnType<typeof setTimeout>>()
/** setTimeout's longest delay (~24.8 days); a credential valid longer is not watched. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** A connection whose credential expires (a JWT's exp) is closed then: v5 DISCONNECT 0xA0. */
function endAtExpiry(conn: Connection, expiresAt: number): void {
  const ms = Math.max(0, expiresAt - Date.now())
  if (ms > MAX_TIMER_MS) return
  const timer = setTimeout(() => {
    expiryTimers.delete(conn)
    if (conn.state !== 'connected') return
    conn.broker.log.info('closing connection: credential expired', { clientId: conn.clientId })
    conn.broker.security?.audit.event('kick', { ...identity(conn), reason: 'credential expired' })
    conn.disconnect(RC.MAXIMUM_CONNECT_TIME, 'credential expired')
  }, ms)
  timer.unref?.()
  expiryTimers.set(conn, timer)
}

/** Drops the expiry timer of a closing connection (so it does not keep the connection alive). */
export function forgetExpiry(conn: Connection): void {
  const timer = expiryTimers.get(conn)
  if (timer === undefined) return
  clearTimeout(timer)
  expiryTimers.delete(conn)
}

/** A failed login (any method): the refusal waits longer with each failure from the address. */
export async function refuseLogin(conn: Connection, code: number, reason: string, detail?: string): Promise<void> {
  const delay = loginDelay(conn, conn.username, true)
  if (delay > 0) await Bun.sleep(delay)
  refuse(conn, code, reason, detail)
}

/** The login delay for this connection (security.loginDelay), cut so that the answer arrives
 * before the connect timeout closes the connection. */
export function loginDelay(conn: Connection, username: string | undefined, failed: boolean): number {
  const sec = conn.broker.security
  if (sec === null) return 0
  const left = connectDeadline(conn) - Date.now()
  return Math.max(0, Math.min(sec.loginDelay(conn.socket.remoteAddress, username, failed), left))
}

/** When the answer to a CONNECT must have gone out, before the connect timeout closes it (ms since the epoch). */
function connectDeadline(conn: Connection): number {
  return conn.openedAt + conn.broker.config.mqtt.connectTimeout * 1000 - 250
}

/** Called by the AUTH flow when enhanced authentication of a CONNECT succeeded. */
export function completePending(conn: Connection, authData: Buffer | undefined): void {
  const job = pending.get(conn)
  if (job === undefined) throw new MqttError(RC.PROTOCOL_ERROR, 'no CONNECT awaiting authentication')
  pending.delete(conn)
  complete(conn, job.packet, job.assignedId, authData)
}

function complete(conn: Connection, p: IConnectPacket, assignedId: boolean, authData: Buffer | undefined): void {
  const broker = conn.broker
  const cfg = broker.config
  const props = p.properties ?? {}
  const id = p.clientId
  if (broker.closing) return refuse(conn, RC.SERVER_UNAVAILABLE, 'server shutting down')
  const old = broker.connectionOf(id)
  if (old === undefined && broker.onlineCount >= cfg.mqtt.maxConnections) {
    return refuse(conn, RC.QUOTA_EXCEEDED, `maximum connections (${cfg.mqtt.maxConnections}) reached`)
  }
  const will = buildWill(conn, p)
  if (typeof will === 'string') return
  // the will is a publish like any other: the ACL must allow its topic (as Mosquitto does), and
  // $SYS/ is the broker's, as for a direct PUBLISH
  const sec = broker.security
  if (will !== null) {
    const sys = isSysTopic(will.msg.topic)
    if (sys || (sec !== null && !sec.authorize(conn, 'publish', will.msg.topic))) {
      return refuse(conn, RC.NOT_AUTHORIZED, 'not authorized', `will topic ${will.msg.topic} denied ${sys ? '($SYS/ is the broker\'s)' : 'by the ACL'}`)
    }
  }
  // a session belongs to the user who made it; sessions per user are limited (ownership.ts)
  const owned = checkOwnership(conn)
  if (owned !== null) return refuse(conn, owned.code, owned.reason, owned.detail)
  if (old !== undefined) {
    // [MQTT-3.1.4-3] take over: the existing connection is closed (v5: DISCONNECT 0x8E)
    broker.log.info('session taken over', { clientId: id })
    broker.security?.audit.event('kick', { ...identity(old), reason: 'session taken over', by: conn.socket.remoteAddress, byUsername: conn.username })
    old.disconnect(RC.SESSION_TAKEN_OVER, 'session taken over by a new connection')
  }
  let s = broker.sessions.get(id)
  // [MQTT-3.1.2-4] clean start discards any existing session; so does its expiry passing
  if (s !== undefined && (p.clean || s.expiresAt() <= Date.now())) { broker.endSession(s); s = undefined }
  const sessionPresent = s !== undefined
  if (s === undefined) s = broker.createSession(id, conn.version)
  broker.sessionOwners.own(s, conn.username)
  // [MQTT-3.1.3-9] a delayed will of the previous connection is not sent when the session resumes
  s.pendingWill = null
  s.version = conn.version
  s.disconnectedAt = 0
  let expiry: number
  if (conn.v5) expiry = Math.min(props.sessionExpiryInterval ?? 0, cfg.limits.maxSessionExpiry)
  else expiry = p.clean ? 0 : cfg.session.v3Expiry === 0 ? 0xffffffff : cfg.session.v3Expiry
  s.expiryInterval = expiry
  // only a session that outlives its connection is written to a durable store
  const persistent = expiry > 0 && broker.store.kind !== 'memory'
  if (persistent) s.store = broker.store
  else if (s.store !== null && s.spilledCount === 0) { s.store.deleteSession(id); s.store = null }
  // else: Session Expiry 0 resumes a queue in the store: it is read on in pages while this
  // connection lives (never all at once), and its rows go with the session when it ends
  // (broker.endSession; after a crash, the sweep at start ends it as expired)
  conn.will = will
  conn.state = 'connected'
  broker.attach(s, conn)
  // who reads this session's messages from now on (queued ones included)
  setReader(broker, s, conn)
  broker.saveSession(s)
  conn.clientReceiveMaximum = props.receiveMaximum ?? 65535
  conn.clientMaxPacketSize = props.maximumPacketSize ?? 268435460
  conn.clientTopicAliasMax = props.topicAliasMaximum ?? 0
  let keepalive = p.keepalive ?? 0
  let serverKeepAlive: number | undefined
  const maxKa = cfg.limits.maxKeepalive
  if (conn.v5 && maxKa > 0 && (keepalive === 0 || keepalive > maxKa)) {
    keepalive = maxKa
    serverKeepAlive = maxKa
  }
  conn.keepalive = keepalive
  if (conn.v5) {
    const lim = cfg.limits
    const ack: Record<string, unknown> = {
      receiveMaximum: lim.receiveMaximum,
      maximumPacketSize: lim.maxPacketSize,
      topicAliasMaximum: lim.topicAliasMaximum,
      retainAvailable: lim.retainAvailable,
      wildcardSubscriptionAvailable: lim.wildcardSubscriptions,
      subscriptionIdentifiersAvailable: lim.subscriptionIdentifiers,
      sharedSubscriptionAvailable: lim.sharedSubscriptions,
    }
    if (lim.maxQos < 2) ack.maximumQoS = lim.maxQos
    if (lim.topicAliasMaximum === 0) delete ack.topicAliasMaximum
    if (expiry !== (props.sessionExpiryInterval ?? 0)) ack.sessionExpiryInterval = expiry
    if (assignedId) ack.assignedClientIdentifier = id
    if (serverKeepAlive !== undefined) ack.serverKeepAlive = serverKeepAlive
    if (conn.authMethod !== undefined) {
      ack.authenticationMethod = conn.authMethod
      if (authData !== undefined) ack.authenticationData = authData
    }
    const packet = { cmd: 'connack', sessionPresent, reasonCode: 0, properties: ack } as Packet
    // the usual CONNACK only states the broker's limits: the same bytes for every client
    const usual = expiry === (props.sessionExpiryInterval ?? 0) && !assignedId && serverKeepAlive === undefined && conn.authMethod === undefined
    const bytes = usual ? usualConnack(broker, sessionPresent, packet) : null
    if (bytes !== null && bytes.length <= conn.clientMaxPacketSize) conn.send(bytes)
    else conn.sendPacket(packet)
  } else {
    // [MQTT-3.2.2-1..3] session present reflects a resumed session
    conn.sendPacket({ cmd: 'connack', sessionPresent, returnCode: 0 })
  }
  broker.log.debug('client connected', { clientId: id, version: conn.version, clean: p.clean, sessionPresent })
  // identity() reads the socket's address, which Bun then keeps as a string for the socket's life
  if (broker.security?.audit.enabled) broker.security.audit.event('connect', { ...identity(conn), version: conn.version, method: conn.authMethod })
  if (sessionPresent) {
    recheckResumed(conn, s)
    resendInflight(conn, s)
    drainQueue(conn, s)
  }
}

/** The encoded v5 CONNACK that only states the broker's limits, by session present (made once). */
const usualConnacks = new WeakMap<Broker, [Buffer | null, Buffer | null]>()

function usualConnack(broker: Broker, sessionPresent: boolean, packet: Packet): Buffer {
  let cached = usualConnacks.get(broker)
  if (cached === undefined) usualConnacks.set(broker, cached = [null, null])
  const i = sessionPresent ? 1 : 0
  return cached[i] ??= encodePacket(packet, 5)
}

/**
 * A resumed session may have been made by another user (the same client id) or under older
 * rules: subscriptions through which this client may read nothing are dropped. Queued and
 * unacknowledged messages are checked one by one as they go out (deliver.ts).
 */
function recheckResumed(conn: Connection, s: Session): void {
  const broker = conn.broker
  const sec = broker.security
  if (sec === null || !sec.restricts(conn)) return
  let changed = false
  for (const sub of s.subscriptionList()) {
    if (sec.authorize(conn, 'subscribe', sub.filter)) continue
    broker.removeSubscription(s, sub.raw)
    changed = true
    sec.audit.event('acl-denied', { ...identity(conn), action: 'subscription dropped on resume', topic: sub.raw })
  }
  if (changed) broker.saveSession(s)
}

/** Validates the will and turns it into a message; refuses the CONNECT (returns a string) when bad. */
function buildWill(conn: Connection, p: IConnectPacket): Connection['will'] | string {
  const w = p.will
  if (w === undefined) return null
  const lim = conn.broker.config.limits
  const err = topicNameError(w.topic, conn.broker.topicLimits)
  if (err !== null) { refuseString(conn, RC.TOPIC_NAME_INVALID, `will topic: ${err}`); return err }
  // [MQTT-3.2.2-12] a will QoS above Maximum QoS is refused with 0x9B
  if ((w.qos ?? 0) > lim.maxQos) { refuse(conn, RC.QOS_NOT_SUPPORTED, 'will QoS not supported'); return 'qos' }
  // [MQTT-3.2.2-13] a retained will without retain support is refused with 0x9A
  if (w.retain && !lim.retainAvailable) { refuse(conn, RC.RETAIN_NOT_SUPPORTED, 'retain not supported'); return 'retain' }
  const wp = w.properties ?? {}
  const msgProps: Message['props'] = {}
  if (wp.payloadFormatIndicator !== undefined) msgProps.payloadFormatIndicator = wp.payloadFormatIndicator ? 1 : 0
  if (wp.contentType !== undefined) msgProps.contentType = wp.contentType
  if (wp.responseTopic !== undefined) msgProps.responseTopic = wp.responseTopic
  if (wp.correlationData !== undefined) msgProps.correlationData = wp.correlationData
  // [MQTT-3.1.3-10] keep the order of the will's User Properties (raw bytes from the codec)
  const up = (wp as WillPropsRaw).rawUserProps ?? encodeUserProps(wp.userProperties)
  if (up !== undefined) msgProps.userProps = up
  const hasProps = Object.keys(msgProps).length > 0
  const payload = typeof w.payload === 'string' ? Buffer.from(w.payload) : Buffer.from(w.payload)
  const expiry = wp.messageExpiryInterval
  const msg: Message = {
    topic: w.topic, payload, qos: (w.qos ?? 0) as QoS, retain: w.retain ?? false,
    props: hasProps ? msgProps : null,
    expiresAt: 0, origin: p.clientId,
  }
  const delay = wp.willDelayInterval ?? 0
  return { msg, delay, expiry: expiry ?? -1 }
}

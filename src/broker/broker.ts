import { createAdminApp } from '../admin/app.ts'
import { Security } from '../auth/security.ts'
import { QUEUE_DEFAULTS, type Config } from '../config/schema.ts'
import type { Message } from '../codec/message.ts'
import { compactMessage } from '../codec/slab.ts'
import { RC } from '../codec/reason-codes.ts'
import { createLogger, type Logger, type LogLevel } from '../log.ts'
import { Session } from '../session/session.ts'
import { dropCounters, type DropCounters, type QueuePolicy } from '../session/queue-policy.ts'
import type { Subscription } from '../session/types.ts'
import { MemoryStore } from '../store/memory.ts'
import { SqliteStore } from '../store/sqlite/sqlite-store.ts'
import type { Store } from '../store/types.ts'
import { TopicTree } from '../topic/topic-tree.ts'
import { TopicTrie } from '../topic/trie.ts'
import type { TopicLimits } from '../topic/validate.ts'
import { trustedProxies } from '../transport/proxy-protocol.ts'
import { listenTcp } from '../transport/tcp.ts'
import { listenQuic } from '../transport/quic.ts'
import { listenTls } from '../transport/tls.ts'
import { listenWs } from '../transport/websocket.ts'
import { Linger } from '../transport/linger.ts'
import type { ConnectionSink, Listener, MqttSocket } from '../transport/types.ts'
import type { EnhancedAuth } from './auth-hooks.ts'
import { GroupCommit, type CommitResult } from './commit.ts'
import { Connection } from './connection.ts'
import { deliver } from './deliver.ts'
import { sweep } from './expiry.ts'
import { admitAddress, REFUSED, releaseAddress } from './limits.ts'
import { IdleCollector } from './idle-gc.ts'
import { MemoryBudget } from './memory.ts'
import { restore } from './restore.ts'
import { route, type Match } from './route.ts'
import { publishSys } from './sys-topics.ts'
import { publishWill } from './will.ts'
import { identity, Throttle } from '../auth/audit.ts'
import { dropRemovedUsers, pendingWillAllowed, recheckWill, SessionOwners } from './ownership.ts'

export interface BrokerStats {
  msgsIn: number
  msgsOut: number
  bytesIn: number
  bytesOut: number
  /** Messages dropped, all reasons (by reason: Broker.drops). */
  dropped: number
  /** QoS 1/2 PUBLISH not acknowledged because a matching session's queue was full (refuse). */
  refused: number
  connectionsTotal: number
  /** Commits that had to drop writes because the store was full. */
  storeFull: number
  /** Store transactions committed (each holds the writes of one event-loop turn or more). */
  commits: number
  /** Retained messages not kept because of limits.maxRetainedMessages / maxRetainedBytes. */
  retainedRefused: number
}

export interface BrokerOptions {
  store?: Store
  log?: Logger
  /** Enhanced authentication methods (v5 AUTH), by method name. */
  authMethods?: Map<string, EnhancedAuth>
}

/** The broker: owns sessions, subscriptions, retained messages and listeners. */
export class Broker {
  readonly config: Readonly<Config>
  /** Topic name and filter limits from the config (validate.ts), made once. */
  readonly topicLimits: TopicLimits
  readonly log: Logger
  readonly store: Store
  readonly authMethods: Map<string, EnhancedAuth>
  /** Authentication chain, ACL and audit log (built from the config in start()). */
  security: Security | null = null
  readonly stats: BrokerStats = { msgsIn: 0, msgsOut: 0, bytesIn: 0, bytesOut: 0, dropped: 0, refused: 0, connectionsTotal: 0, storeFull: 0, commits: 0, retainedRefused: 0 }
  /** Dropped messages by reason (queue bounds, slow consumers, expiry, oversize). */
  readonly drops: DropCounters = dropCounters()
  readonly sessions = new Map<string, Session>()
  /** Which user owns which session, and how many each holds (ownership.ts). */
  readonly sessionOwners = new SessionOwners()
  /** Keeps repeated warnings (refused connects per address, quotas) to a few lines a second. */
  readonly lineThrottle = new Throttle()
  /** Connected clients (after CONNACK); each is its session's `connection`. */
  onlineCount = 0
  /** Every open connection, including ones that have not sent CONNECT yet: an intrusive
   * list through Connection.prevConn/nextConn (a Set costs ~140 B per entry at 19,000). */
  #firstConn: Connection | null = null
  connectionCount = 0
  readonly subs = new TopicTrie<Subscription>()
  readonly matchCache = new Map<string, Match>()
  /** Set once a session has a reader (an ACL restricts its client): route checks read access. */
  readChecks = false
  readonly sharedCursor = new Map<string, number>()
  /** The latest $SYS values, sent as retained messages to new $SYS subscribers. */
  readonly sysRetained = new TopicTree<Message>()
  readonly listeners: Listener[] = []
  readonly startedAt = Date.now()
  /** Sockets of closed connections that still read, so their last packet arrives (bounded). */
  readonly linger = new Linger()
  #timers: ReturnType<typeof setInterval>[] = []
  /** Connections with output queued in this turn; flushed together in one microtask. */
  #dirty: Connection[] = []
  #spare: Connection[] = []
  #flushAll = () => {
    const dirty = this.#dirty
    this.#dirty = this.#spare
    for (let i = 0; i < dirty.length; i++) dirty[i]!.flush()
    dirty.length = 0
    this.#spare = dirty
  }
  #closing = false

  /** The queue policy all sessions share (made from the config on first use). */
  #queuePolicy: QueuePolicy | null = null
  /** session.queueOverflow is refuse: a QoS 1/2 PUBLISH is acknowledged only when every queue has room. */
  readonly refuseFull: boolean

  constructor(config: Readonly<Config>, opts: BrokerOptions = {}) {
    this.config = config
    const lim = config.limits
    this.topicLimits = { maxLength: lim.maxTopicLength, maxLevels: lim.maxTopicLevels, allowControl: lim.allowControlCharacters }
    this.log = opts.log ?? createLogger(config.log.level as LogLevel)
    this.store = opts.store ?? createStore(config)
    this.authMethods = opts.authMethods ?? new Map()
    this.commits = new GroupCommit(this)
    this.refuseFull = config.session.queueOverflow === 'refuse'
    this.memory = new MemoryBudget(this)
    this.idleGc = new IdleCollector(this)
  }

  /** Bounds and overflow policy of session queues, with the counters their drops add to. */
  get queuePolicy(): QueuePolicy {
    return this.#queuePolicy ??= queuePolicy(this)
  }

  /** Starts a garbage collection when the broker falls idle after a burst. */
  readonly idleGc: IdleCollector

  /** The memory budget (limits.memory) over unsent output, incomplete packets and queues. */
  readonly memory: MemoryBudget

  /** Group commit of store writes; acknowledgements wait on it. */
  readonly commits: GroupCommit

  /** Runs fn once the writes made so far are durable. */
  afterCommit(fn: (result: CommitResult) => void): void {
    this.commits.after(fn)
  }

  /** Makes sure buffered store writes get committed soon. */
  touch(): void {
    if (this.store.pending) this.commits.schedule()
  }

  /** Queues a connection's coalesced write for the end of the current callback. */
  scheduleFlush(conn: Connection): void {
    if (this.#dirty.length === 0) queueMicrotask(this.#flushAll)
    this.#dirty.push(conn)
  }

  get closing(): boolean {
    return this.#closing
  }

  /** Opens the store, restores sessions and retained messages, starts listeners and timers. */
  async start(): Promise<void> {
    this.security = await Security.create(this.config, this.log)
    for (const [name, method] of this.security.methods()) if (!this.authMethods.has(name)) this.authMethods.set(name, method)
    this.security.onAclReload = () => this.recheckSubscriptions()
    this.security.onUsersRemoved = (users) => dropRemovedUsers(this, users)
    await this.store.open()
    restore(this)
    // time passed while the broker was down: expire sessions, wills and messages before listening
    sweep(this)
    this.commits.flush()
    const { host, port } = this.config.mqtt
    if (port !== 'off') {
      const proxies = this.config.mqtt.trustedProxies
      const l = listenTcp(host, port, (socket, listener) => this.accept(socket, listener), {
        ...(proxies.length > 0 ? { proxied: trustedProxies(proxies, 'mqtt.trustedProxies') } : {}),
        headerTimeout: this.config.mqtt.connectTimeout, log: this.log,
      })
      this.listeners.push(l)
      this.log.info('mqtt listening', { transport: 'tcp', host, port: l.port })
    }
    const tls = this.config.tls
    if (tls.cert !== '' && tls.port !== 'off') {
      const l = listenTls({ ...tls, port: tls.port, log: this.log }, (socket) => this.accept(socket, 'mqtts'))
      this.listeners.push(l)
      this.log.info('mqtt listening', { transport: 'tls', host: tls.host, port: l.port, clientCert: tls.clientCert })
    }
    const ws = this.config.ws
    const wsOpts = {
      host: ws.host, path: ws.path, maxPacketSize: this.config.limits.maxPacketSize, trustedProxies: ws.trustedProxies, log: this.log,
      ...(ws.admin ? { adminFetch: createAdminApp(this).fetch } : {}),
    }
    if (ws.port !== 'off') {
      const l = listenWs({ ...wsOpts, port: ws.port }, (socket) => this.accept(socket, 'ws'))
      this.listeners.push(l)
      this.log.info('mqtt listening', { transport: 'ws', host: ws.host, port: l.port, path: ws.path })
    }
    const wss = this.config.wss
    if (tls.cert !== '' && wss.port !== 'off') {
      const l = listenWs({ ...wsOpts, port: wss.port, tls }, (socket) => this.accept(socket, 'wss'))
      this.listeners.push(l)
      this.log.info('mqtt listening', { transport: 'wss', host: ws.host, port: l.port, path: ws.path, clientCert: tls.clientCert })
      if (tls.identity !== 'off') this.log.warn('tls.identity does not apply on wss (the WebSocket server cannot read client certificates): wss clients need another authenticator', { listener: 'wss' })
    }
    const quic = this.config.quic
    if (tls.cert !== '' && quic.port !== 'off') {
      const l = await listenQuic({
        ...tls, host: quic.host, port: quic.port, log: this.log,
        maxKeepalive: this.config.limits.maxKeepalive, maxUnreadBytes: this.config.limits.maxPendingBytes,
      }, (socket) => this.accept(socket, 'quic'))
      this.listeners.push(l)
      this.log.info('mqtt listening', { transport: 'quic', host: quic.host, port: l.port, clientCert: tls.clientCert })
    }
    this.#timers.push(setInterval(() => { sweep(this); this.touch() }, 500))
    this.#timers.push(setInterval(() => this.idleGc.tick(), 1000))
    if (this.config.sys.interval > 0) {
      publishSys(this)
      this.#timers.push(setInterval(() => publishSys(this), this.config.sys.interval * 1000))
    }
  }

  /** Port of the first MQTT listener (useful with port 0). */
  get port(): number {
    return this.listeners[0]?.port ?? 0
  }

  /** Port of the listener with this name (mqtt, mqtts, ...), 0 when there is none. */
  portOf(name: string): number {
    return this.listeners.find((l) => l.name === name)?.port ?? 0
  }

  /** Re-reads the TLS certificate files; throws when they are invalid (the old ones stay in use). */
  async reloadTls(): Promise<void> {
    for (const l of this.listeners) if (l.reload !== undefined) await l.reload()
  }

  /** A new socket: refused at once (closed unread) over the per-address limits, else a Connection. */
  accept(socket: MqttSocket, listener = 'mqtt'): ConnectionSink {
    const entry = admitAddress(this, socket, listener)
    if (entry === false) {
      try { socket.end() } catch { /* already closed */ }
      return REFUSED
    }
    const conn = new Connection(this, socket, listener)
    conn.addressEntry = entry
    conn.nextConn = this.#firstConn
    if (this.#firstConn !== null) this.#firstConn.prevConn = conn
    this.#firstConn = conn
    this.connectionCount++
    this.stats.connectionsTotal++
    return conn
  }

  /** Every open connection (a snapshot: safe to close them while iterating). */
  allConnections(): Connection[] {
    const out: Connection[] = []
    for (let c = this.#firstConn; c !== null; c = c.nextConn) out.push(c)
    return out
  }

  /** The connection of a connected client, if any. */
  connectionOf(clientId: string): Connection | undefined {
    return this.sessions.get(clientId)?.connection ?? undefined
  }

  isOnline(clientId: string): boolean {
    return this.sessions.get(clientId)?.connection != null
  }

  /** Makes `conn` the connection of session `s` (after CONNACK). */
  attach(s: Session, conn: Connection): void {
    if (s.connection === null) this.onlineCount++
    s.connection = conn
    conn.session = s
  }

  createSession(clientId: string, version: 3 | 4 | 5): Session {
    const s = new Session(clientId, version)
    s.policy = this.queuePolicy
    this.sessions.set(clientId, s)
    return s
  }

  /** Ends a session: its subscriptions go, and a pending will is published [MQTT-3.1.3-9]. */
  endSession(s: Session): void {
    if (this.sessions.get(s.clientId) !== s) return
    for (const sub of s.subscriptionList()) this.removeSubscription(s, sub.raw)
    if (s.connection !== null) { s.connection = null; this.onlineCount-- }
    this.sessions.delete(s.clientId)
    this.sessionOwners.release(s)
    if (s.store !== null) s.store.deleteSession(s.clientId)
    s.store = null
    if (s.pendingWill !== null) {
      const w = s.pendingWill
      s.pendingWill = null
      if (pendingWillAllowed(this, s, w, 'at publication')) publishWill(this, w)
    }
  }

  addSubscription(s: Session, sub: Subscription): boolean {
    s.setSubscription(sub)
    this.matchCache.clear()
    return this.subs.add(sub.filter, sub.group === null ? s.clientId : `${sub.group}\u0000${s.clientId}`, sub)
  }

  removeSubscription(s: Session, raw: string): boolean {
    const sub = s.getSubscription(raw)
    if (sub === undefined) return false
    s.deleteSubscription(raw)
    this.matchCache.clear()
    if (sub.group !== null) this.sharedCursor.delete(`${sub.group}\u0000${sub.filter}`)
    this.subs.remove(sub.filter, sub.group === null ? s.clientId : `${sub.group}\u0000${s.clientId}`)
    return true
  }

  /** Writes a persistent session's record: subscriptions, expiry, the will it would send. */
  saveSession(s: Session): void {
    if (s.store === null) return
    const conn = s.connection
    const live = conn !== null && conn.session === s ? conn.will : null
    s.store.saveSession({
      clientId: s.clientId, owner: s.owner, version: s.version, expiryInterval: s.expiryInterval,
      disconnectedAt: s.disconnectedAt, subscriptions: s.subscriptionList(),
      will: s.pendingWill ?? live, willAt: s.pendingWill !== null ? s.pendingWillAt : 0,
    })
  }

  /** Routes a message to every matching subscription; returns how many sessions got it. */
  publish(msg: Message): number {
    this.stats.msgsIn++
    return route(this, msg)
  }

  /** A client's QoS 1/2 PUBLISH awaiting its acknowledgement: -1 when refused (queue full, refuse policy). */
  publishAcked(msg: Message): number {
    this.stats.msgsIn++
    return route(this, msg, this.refuseFull && msg.qos > 0)
  }

  deliverTo(s: Session, d: Parameters<typeof deliver>[2]): void {
    deliver(s, s.connection ?? undefined, d)
  }

  /** Bookkeeping when a connection ends, for whatever reason. */
  connectionClosed(conn: Connection): void {
    const prev = conn.prevConn, next = conn.nextConn
    if (prev !== null) prev.nextConn = next
    else if (this.#firstConn === conn) this.#firstConn = next
    if (next !== null) next.prevConn = prev
    conn.prevConn = conn.nextConn = null
    this.connectionCount--
    if (conn.addressEntry !== null) { releaseAddress(this, conn.addressEntry); conn.addressEntry = null }
    if (conn.state !== 'connected' || conn.session === null) return
    const s = conn.session
    if (s.connection === conn) { s.connection = null; this.onlineCount-- }
    s.disconnectedAt = Date.now()
    const will = conn.will
    conn.will = null
    // a shutdown closes connections without a DISCONNECT from the client: wills are published
    if (will !== null && !conn.cleanDisconnect) {
      // [MQTT-3.1.3-9] a delayed will waits for the delay or the end of the session
      if (will.delay > 0 && s.expiryInterval > 0) {
        s.pendingWill = will
        s.pendingWillAt = Date.now() + Math.min(will.delay, s.expiryInterval) * 1000
      } else {
        publishWill(this, will)
      }
    }
    if (s.expiryInterval === 0) this.endSession(s)
    else {
      // unacknowledged messages wait for the client to come back (slab.ts)
      if (s.inflightCount > 0) for (const f of s.inflight.values()) compactMessage(f.delivery.msg)
      // an away client's queue lives in the store only (queue.ts)
      s.evictHead()
      this.saveSession(s)
    }
    this.log.debug('client disconnected', { clientId: conn.clientId })
  }

  /**
   * After the ACL rules changed: cached read decisions go, and subscriptions of connected
   * clients that the new rules refuse (no topic they can match is readable any more) are
   * removed (as if unsubscribed); so is a will whose topic they may no longer publish to
   * (recheckWill). Offline sessions are checked when they resume; their pending (delayed) wills
   * are checked now and again when published (pendingWillAllowed).
   */
  recheckSubscriptions(): void {
    const sec = this.security
    if (sec === null) return
    this.matchCache.clear()
    for (const s of this.sessions.values()) {
      const conn = s.connection
      if (conn === null) {
        if (s.pendingWill !== null && !pendingWillAllowed(this, s, s.pendingWill, 'on reload')) { s.pendingWill = null; this.saveSession(s) }
        continue
      }
      let changed = false
      for (const sub of s.subscriptionList()) {
        if (sec.authorize(conn, 'subscribe', sub.filter)) continue
        this.removeSubscription(s, sub.raw)
        changed = true
        this.log.info('subscription revoked by the ACL', { clientId: s.clientId, filter: sub.raw })
        sec.audit.event('acl-denied', { ...identity(conn), action: 'subscription revoked', topic: sub.raw })
      }
      const willKept = recheckWill(this, conn)
      if (changed || !willKept) this.saveSession(s)
    }
  }

  /**
   * Re-reads the password, JWT key, SCRAM and ACL files and the TLS certificates (SIGHUP, admin
   * API). Returns the errors; whatever failed keeps its previous version.
   */
  async reload(): Promise<string[]> {
    const errors = this.security !== null ? await this.security.reload() : []
    for (const l of this.listeners) {
      if (l.reload === undefined) continue
      try { await l.reload() } catch (e) { errors.push((e as Error).message) }
    }
    this.log.info('configuration files reloaded', { errors: errors.length })
    this.security?.audit.event('reload', { result: errors.length === 0 ? 'ok' : 'failed', errors })
    return errors
  }

  /** Graceful shutdown: stop accepting, DISCONNECT 0x8B to v5 clients, close everything. */
  async close(): Promise<void> {
    if (this.#closing) return
    this.#closing = true
    for (const t of this.#timers) clearInterval(t)
    for (const l of this.listeners) l.stop(false)
    for (const conn of this.allConnections()) conn.disconnect(RC.SERVER_SHUTTING_DOWN, 'server shutting down')
    for (const l of this.listeners) l.stop(true)
    this.linger.stop()
    this.commits.flush()
    this.security?.close()
    await this.store.close()
  }
}

/** Queue bounds by store: with the memory store the defaults are smaller (QUEUE_DEFAULTS). */
function queuePolicy(broker: Broker): QueuePolicy {
  const lim = broker.config.limits
  const msgs = lim.maxQueuedMessages, bytes = lim.maxQueuedBytes
  const memMsgs = msgs === QUEUE_DEFAULTS.messages ? QUEUE_DEFAULTS.memoryMessages : msgs
  const memBytes = bytes === QUEUE_DEFAULTS.bytes ? QUEUE_DEFAULTS.memoryBytes : bytes
  return {
    maxQueued: msgs, maxQueuedBytes: bytes, maxQueuedMem: memMsgs, maxQueuedBytesMem: memBytes,
    queueQos0: broker.config.session.queueQos0, overflow: broker.config.session.queueOverflow,
    counters: broker.stats, drops: broker.drops, warn: (m, f) => broker.log.warn(m, f),
  }
}

/** The store the config asks for: SQLite in data.dir (default) or memory. */
export function createStore(config: Readonly<Config>): Store {
  const d = config.data
  if (d.store === 'memory') return new MemoryStore()
  return new SqliteStore({ dir: d.dir, durability: d.durability, maxSizeMb: d.maxSize })
}

/** Creates a broker from a validated config; call start() to listen. */
export function createBroker(config: Readonly<Config>, opts?: BrokerOptions): Broker {
  return new Broker(config, opts)
}

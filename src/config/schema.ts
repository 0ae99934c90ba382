import * as v from 'valibot'

/** The single source of configuration keys, their types, limits and defaults. */

const int = (min: number, max: number, def: number) =>
  v.optional(v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max)), def)
const port = (def: number) =>
  v.optional(v.union([v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535)), v.literal('off')],
    'a port number 0-65535 or "off"'), def)
const str = (def: string) => v.optional(v.pipe(v.string(), v.minLength(1)), def)
const bool = (def: boolean) => v.optional(v.boolean(), def)
/** A string that may be empty (empty = not set / off). */
const text = () => v.optional(v.string(), '')
/** true | false | "auto" (auto: decided from the rest of the config). */
const tristate = () => v.optional(v.pipe(
  v.union([v.boolean(), v.picklist(['auto', 'true', 'false'])], 'true, false or "auto"'),
  v.transform((x): boolean | 'auto' => x === 'true' ? true : x === 'false' ? false : x),
), 'auto')
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3 }
/** A size such as 512MiB, 2GB, 64m or 1048576 in bytes; null when it is not one. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text)
  const unit = m === null ? undefined : SIZE_UNITS[m[2]!.toLowerCase()]
  return unit === undefined ? null : Math.floor(Number(m![1]) * unit)
}
/** The smallest memory budget: a smaller one is a unit mistake (512 meant as MiB is 512 bytes). */
export const MEMORY_MIN = 1024 * 1024
const SIZE_HINT = '"auto", 0 (no budget), or at least 1 MiB: a number of bytes or a size such as 512MiB or 2GB'
const sizeOk = (n: number) => n === 0 || n >= MEMORY_MIN
/** "auto" (any case) or a size in bytes (a number, or a string with a unit): 0, or at least 1 MiB. */
const size = () => v.optional(v.union([
  v.pipe(v.string(), v.check((x) => x.trim().toLowerCase() === 'auto'), v.transform((): 'auto' => 'auto')),
  v.pipe(v.number(), v.integer(), v.check(sizeOk)),
  v.pipe(v.string(), v.check((x) => { const n = parseSize(x); return n !== null && sizeOk(n) }), v.transform((x) => parseSize(x)!)),
], SIZE_HINT), 'auto')
const oneOf = <const T extends readonly [string, ...string[]]>(values: T, def: T[number]) => v.optional(v.picklist(values), def)

/**
 * Default bounds of a session queue. With the SQLite store a persistent session's queue lives on
 * disk: 10 minutes away at 1,000 msgs/s of 100-byte payloads (600,000 messages, ~80 MB with
 * topics) fit. Queues held in memory (memory store, sessions that end with their connection)
 * use the smaller memory* values while the keys are left at these defaults.
 */
export const QUEUE_DEFAULTS = {
  messages: 1_000_000, bytes: 256 * 1024 * 1024, memoryMessages: 100_000, memoryBytes: 32 * 1024 * 1024,
} as const

export const ConfigSchema = v.strictObject({
  mqtt: v.optional(v.strictObject({
    /** Interface the MQTT TCP listener binds to. */
    host: str('0.0.0.0'),
    /** MQTT TCP port; 0 picks a free port (logged), "off" disables the listener. */
    port: port(1883),
    /** Connections beyond this get CONNACK 0x97 / 0x03 and are closed. */
    maxConnections: int(1, 10_000_000, 100_000),
    /** Seconds a new connection may take to send CONNECT. */
    connectTimeout: int(1, 3600, 10),
    /** Open connections allowed from one IP address (0 = no limit). */
    maxConnectionsPerAddress: int(0, 10_000_000, 0),
    /** New connections per second allowed from one IP address (0 = no limit). */
    connectRatePerAddress: int(0, 10_000_000, 0),
    /** Load balancers (IPs or CIDRs) that start each connection with a PROXY protocol v1/v2 header naming the client; empty = none. */
    trustedProxies: v.optional(v.array(v.string()), []),
  }), {}),
  ws: v.optional(v.strictObject({
    /** Interface of the MQTT-over-WebSocket listener (also used by wss). */
    host: str('0.0.0.0'),
    /** MQTT over WebSocket port; 0 picks a free port, "off" disables the listener. */
    port: port(8083),
    /** URL path that accepts MQTT WebSocket upgrades. */
    path: v.optional(v.pipe(v.string(), v.startsWith('/', 'a path starting with /')), '/mqtt'),
    /** Also serve the admin API (health, /api) on the WebSocket listeners, for a single-port gateway. */
    admin: bool(false),
    /** Proxies (IPs or CIDRs) whose X-Forwarded-For header names the client address; empty = trust none. */
    trustedProxies: v.optional(v.array(v.string()), []),
  }), {}),
  wss: v.optional(v.strictObject({
    /** MQTT over secure WebSocket port (uses the tls.* certificate options); on when tls.cert is set. */
    port: port(8084),
  }), {}),
  quic: v.optional(v.strictObject({
    host: str('0.0.0.0'),
    /** MQTT over QUIC UDP port (ALPN mqtt, TLS 1.3 with the tls.* certificate options); on when tls.cert is set. */
    port: port(14567),
  }), {}),
  tls: v.optional(v.strictObject({
    host: str('0.0.0.0'),
    /** MQTT over TLS port; the listener is on when a certificate is set. 0 = any free port. */
    port: port(8883),
    /** PEM certificate chain file of the server. */
    cert: text(),
    /** PEM private key file of the server. */
    key: text(),
    /** PEM file of the CA(s) that client certificates must chain to (mutual TLS). */
    ca: text(),
    /** Client certificates: none, request (verified when sent), require (no certificate, no connection). */
    clientCert: oneOf(['none', 'request', 'require'], 'none'),
    /** Oldest TLS version accepted. */
    minVersion: oneOf(['TLSv1.2', 'TLSv1.3'], 'TLSv1.2'),
    /** Use the client certificate's identity as the username: off, cn (subject CN), san (first DNS/email/URI SAN). */
    identity: oneOf(['off', 'cn', 'san'], 'off'),
  }), {}),
  auth: v.optional(v.strictObject({
    /** Clients without credentials may connect: auto = only when no authenticator is configured. */
    anonymous: tristate(),
    /** Password file (username:argon2id hash lines, made with `vmqtt passwd`); re-read on change. */
    passwordFile: text(),
    /** Shared secret for HS256/384/512 JWTs in the password field (at least 32 bytes). */
    jwtSecret: text(),
    /** PEM public key or certificate file for RS, PS, ES or EdDSA JWTs. */
    jwtPublicKey: text(),
    /** Local JWKS file (public keys chosen by kid). */
    jwtJwks: text(),
    /** Required JWT issuer (iss); empty = not checked. */
    jwtIssuer: text(),
    /** Required JWT audience (aud); empty = not checked. */
    jwtAudience: text(),
    /** JWT claim that holds the username. */
    jwtUsernameClaim: str('sub'),
    /** JWT claim that may hold {"publish": [...], "subscribe": [...]} topic filter lists. */
    jwtAclClaim: str('acl'),
    /** SCRAM-SHA-256 credentials file (user:SCRAM-SHA-256$iter:salt$StoredKey:ServerKey lines) for MQTT 5 enhanced auth. */
    scramFile: text(),
    /** First delay (ms) before answering a failed login; doubles with each further failure from the address. */
    failDelay: int(0, 60_000, 1000),
    /** Longest delay (ms) for repeated failed logins of one username from one address. */
    failDelayMax: int(0, 600_000, 30_000),
    /** Longest delay (ms) that failures from an address put on every login from it (any username). */
    failDelayAddressMax: int(0, 600_000, 2000),
    /** Password verifications (argon2id) running at once; 0 = half the CPU cores (at least 1). */
    maxConcurrentVerifications: int(0, 1024, 0),
    /** Password checks that may wait for a verification slot; more are refused (v5 0x89, v3 3). */
    maxQueuedVerifications: int(0, 100_000, 64),
  }), {}),
  acl: v.optional(v.strictObject({
    /** ACL rules file (ordered allow/deny rules, first match wins); re-read on change. Empty = everything allowed. */
    file: text(),
  }), {}),
  audit: v.optional(v.strictObject({
    /** Security events as JSON lines: empty = off, "stdout", or a file path (appended). */
    log: text(),
  }), {}),
  admin: v.optional(v.strictObject({
    host: str('0.0.0.0'),
    /** Admin HTTP port (health, readiness); "off" disables it. */
    port: port(8080),
    /** Bearer token required for every admin route but /health and /ready; empty = admin API routes off. */
    token: v.optional(v.union([
      v.literal(''),
      v.pipe(v.string(), v.regex(/^[A-Za-z0-9._~+/-]{16,}=*$/, 'empty, or at least 16 characters of A-Z a-z 0-9 . _ ~ + / - (a bearer token)')),
    ], 'empty, or at least 16 characters of A-Z a-z 0-9 . _ ~ + / - (a bearer token)'), ''),
  }), {}),
  data: v.optional(v.strictObject({
    /** Directory for persistent data (the SQLite database vmqtt.db). */
    dir: str('./data'),
    /** sqlite: durable (default); memory: nothing survives a restart. */
    store: oneOf(['sqlite', 'memory'], 'sqlite'),
    /** fsync: survives power loss (synchronous=FULL); process: survives a vmqtt crash (NORMAL). */
    durability: oneOf(['fsync', 'process'], 'fsync'),
    /** Milliseconds to gather writes into one commit; 0 = one commit per event-loop turn. */
    commitInterval: int(0, 1000, 0),
    /** Largest database size in MiB (0 = no limit); beyond it QoS 1/2 publishers get 0x97. */
    maxSize: int(0, 10_000_000, 0),
  }), {}),
  log: v.optional(v.strictObject({
    level: oneOf(['debug', 'info', 'warn', 'error', 'silent'], 'info'),
  }), {}),
  limits: v.optional(v.strictObject({
    /** Largest packet accepted (bytes); announced as Maximum Packet Size in v5 CONNACK. */
    maxPacketSize: int(64, 268_435_460, 16 * 1024 * 1024),
    /** Largest CONNECT or AUTH packet (bytes): the packets before authentication completes. */
    maxConnectPacketSize: int(64, 268_435_460, 64 * 1024),
    /** Largest packet other than PUBLISH, CONNECT and AUTH (SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, acks), in bytes. */
    maxControlPacketSize: int(64, 268_435_460, 1024 * 1024),
    /** User properties in one packet; more: v5 0x97 (CONNECT: CONNACK, else DISCONNECT), v3 close. */
    maxUserProperties: int(1, 10_000_000, 1024),
    /** Topic filters in one SUBSCRIBE or UNSUBSCRIBE; more: v5 DISCONNECT 0x97, v3 close. */
    maxTopicFiltersPerPacket: int(1, 10_000_000, 1024),
    maxTopicLength: int(1, 65535, 65535),
    maxTopicLevels: int(1, 65535, 128),
    /** Accept control characters (U+0001-U+001F, U+007F-U+009F) in client ids, user names and topics. */
    allowControlCharacters: bool(false),
    /** Unacknowledged QoS 1/2 messages a client may send us at once (v5 Receive Maximum). */
    receiveMaximum: int(1, 65535, 1024),
    /** Unacknowledged QoS 1/2 messages we send to one client at once (also capped by its Receive Maximum). */
    maxInflight: int(1, 65535, 100),
    /** Messages queued per session (offline or beyond the inflight window); memory-held queues: 100,000 while at the default. */
    maxQueuedMessages: int(0, 100_000_000, QUEUE_DEFAULTS.messages),
    /** Bytes (topic + payload) queued per session; memory-held queues: 32 MiB while at the default. */
    maxQueuedBytes: int(0, 1_000_000_000_000, QUEUE_DEFAULTS.bytes),
    /** Retained messages kept broker-wide; a new topic beyond this is not retained. */
    maxRetainedMessages: int(0, 100_000_000, 1_000_000),
    /** Bytes of retained messages (topics + payloads) kept broker-wide, in memory and in the store
     * (0 = no limit); a message that would pass it is delivered but not retained (logged). */
    maxRetainedBytes: int(0, 1_000_000_000_000, 128 * 1024 * 1024),
    /** Sessions (connected or stored) one username may hold (0 = no limit); beyond it CONNACK 0x97 (v3 3). */
    maxSessionsPerUser: int(0, 100_000_000, 10_000),
    /** Highest keepalive (s) allowed; larger or zero requests get Server Keep Alive (v5). 0 = no cap. */
    maxKeepalive: int(0, 65535, 0),
    /** Topic Alias Maximum announced to v5 clients (0 disables inbound aliases). */
    topicAliasMaximum: int(0, 65535, 64),
    /** Cap on the session expiry interval (s) clients may ask for. */
    maxSessionExpiry: int(0, 4_294_967_295, 4_294_967_295),
    /** Highest QoS the broker supports (announced as Maximum QoS). */
    maxQos: int(0, 2, 2),
    retainAvailable: bool(true),
    wildcardSubscriptions: bool(true),
    subscriptionIdentifiers: bool(true),
    sharedSubscriptions: bool(true),
    /** Subscriptions one session may hold (0 = no limit); beyond it SUBACK 0x97 (v3 0x80). */
    maxSubscriptions: int(0, 100_000_000, 10_000),
    /** PUBLISH packets per second one client may send (0 = no limit); v5: 0x96, v3: disconnect. */
    publishRate: int(0, 100_000_000, 0),
    /** PUBLISH bytes per second one client may send (0 = no limit); v5: 0x97, v3: disconnect. */
    publishBytesRate: int(0, 1_000_000_000_000, 0),
    /** Seconds a started packet may take to arrive completely (slow senders are closed). */
    packetTimeout: int(1, 3600, 30),
    /** Bytes of unsent output a client may have before it is disconnected as not reading (0 = no limit). */
    maxPendingBytes: int(0, 1_000_000_000_000, 64 * 1024 * 1024),
    /** Memory budget (bytes) for unsent output, incomplete packets and in-memory queues; auto = a quarter of the cgroup's or machine's memory, 0 = none. */
    memory: size(),
  }), {}),
  session: v.optional(v.strictObject({
    /** Queue QoS 0 messages for offline persistent sessions too. */
    queueQos0: bool(false),
    /** A full queue: refuse the QoS 1/2 PUBLISH (not acknowledged), or drop the oldest or the new message. */
    queueOverflow: oneOf(['refuse', 'drop-oldest', 'drop-new'], 'refuse'),
    /** Session expiry (s) for MQTT 3.x clients with clean session 0; 0 = never expire. */
    v3Expiry: int(0, 4_294_967_295, 0),
    /** Let a client take over the session of its client id when that session belongs to another
     * username; off: CONNACK 0x87 (v3 5), and the other user's session stays as it was. */
    takeoverAcrossUsers: bool(false),
  }), {}),
  shared: v.optional(v.strictObject({
    /** How a shared subscription group picks the member for a message. */
    strategy: oneOf(['round-robin', 'random'], 'round-robin'),
  }), {}),
  sys: v.optional(v.strictObject({
    /** Seconds between $SYS publications; 0 disables them. */
    interval: int(0, 86400, 10),
  }), {}),
})

export type ConfigInput = v.InferInput<typeof ConfigSchema>
export type Config = v.InferOutput<typeof ConfigSchema>

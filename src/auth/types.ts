/**
 * Authentication and authorization hooks. Each hook answers allow, deny or defer; the first
 * decisive answer in the chain wins (mosquitto's model, never "any allow wins").
 */
export type Decision = 'allow' | 'deny' | 'defer'

/** What the TLS layer learned about the client's certificate (mutual TLS). */
export interface PeerCertificate {
  /** Subject common name, when present. */
  cn: string | undefined
  /** Subject alternative names as "DNS:x", "email:y", "URI:z", "IP Address:a". */
  sans: string[]
  /** SHA-256 fingerprint, colon-separated hex. */
  fingerprint: string
  /** True when the certificate chains to a configured CA. */
  authorized: boolean
}

/** One CONNECT as the authenticators see it. */
export interface AuthRequest {
  clientId: string
  username: string | undefined
  password: Buffer | undefined
  /** Client IP address (no port). */
  address: string
  /** Listener name: mqtt, mqtts, ws, wss, quic. */
  listener: string
  cert: PeerCertificate | undefined
  /** The address has recent failed logins: its password check waits behind the others'. */
  suspect?: boolean
  /** The user logged in from this address (or its /24, /64) recently: its check goes first. */
  trusted?: boolean
  /** When the answer must have gone out (ms since the epoch): a check not started by then is busy. */
  deadline?: number
  /** True once nobody waits for the answer (the connection closed): expensive checks are skipped. */
  abandoned?: () => boolean
}

/** Topic filter lists a token (JWT claims) may carry for its own connection. */
export interface ClientAcl {
  publish: string[]
  subscribe: string[]
}

export interface AuthResult {
  decision: Decision
  /** On deny: the CONNACK reason (v5 code; v3 mapping is the broker's job). Default 0x86. */
  reason?: number
  /** On allow: the username the connection gets (e.g. a JWT claim or certificate CN). */
  username?: string
  /** On allow: a per-connection ACL that replaces the rules file for this client. */
  acl?: ClientAcl
  /** On allow: wall-clock ms when the credential expires (a JWT's exp); the connection ends then. */
  expiresAt?: number
  /** Why, for the audit log (never the password). */
  detail?: string
}

export interface Authenticator {
  readonly name: string
  authenticate(req: AuthRequest): AuthResult | Promise<AuthResult>
  /** Re-reads files (SIGHUP, admin API); throws with a clear message when they are invalid. */
  reload?(): void | Promise<void>
  close?(): void
}

/** publish a topic; subscribe to a filter; read: get a message on a topic (subscribe rules). */
export type AclAction = 'publish' | 'subscribe' | 'read'

/** One publish or subscribe as the authorizer sees it. */
export interface AclRequest {
  clientId: string
  username: string | undefined
  address: string
  action: AclAction
  /** The topic name (publish, read) or the topic filter without any $share/{group}/ prefix (subscribe). */
  topic: string
}

/**
 * Enhanced authentication (MQTT 5 AUTH, spec 4.12): a method answers each step of the
 * exchange with success, a challenge (continue), or failure.
 */
export type AuthStep =
  /** username: the identity the method proved; it becomes the connection's username. */
  | { result: 'success'; data?: Buffer; username?: string }
  | { result: 'continue'; data?: Buffer }
  | { result: 'fail'; reason?: number }

export interface AuthContext {
  clientId: string
  username: string | undefined
  /** Per-connection state the method may keep between steps. */
  state: unknown
  /** True when the client started re-authentication on an open connection. */
  reauth: boolean
}

export interface EnhancedAuth {
  /** Called with the Authentication Data of CONNECT or of each AUTH from the client. */
  step(ctx: AuthContext, data: Buffer | undefined): AuthStep | Promise<AuthStep>
}

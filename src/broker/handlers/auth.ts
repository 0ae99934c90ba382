import type { IAuthPacket, Packet } from 'mqtt-packet'
import { MqttError, RC } from '../../codec/reason-codes.ts'
import type { AuthStep } from '../auth-hooks.ts'
import type { Connection } from '../connection.ts'
import { completePending, loginDelay, refuseLogin } from './connect.ts'

/** AUTH from the client: continue an exchange (0x18) or start re-authentication (0x19). */
export function handleAuth(conn: Connection, packet: Packet): void | Promise<void> {
  const p = packet as IAuthPacket
  const method = p.properties?.authenticationMethod
  // [MQTT-4.12.0-5] the method must stay the same for the whole exchange
  if (conn.authMethod === undefined || method !== conn.authMethod) {
    throw new MqttError(RC.PROTOCOL_ERROR, 'AUTH with a different or no authentication method')
  }
  if (conn.state === 'authenticating') {
    if (p.reasonCode !== RC.CONTINUE_AUTHENTICATION) throw new MqttError(RC.PROTOCOL_ERROR, 'AUTH during CONNECT must use reason 0x18')
    return runAuthStep(conn, p.properties?.authenticationData, false)
  }
  if (p.reasonCode === RC.REAUTHENTICATE || (p.reasonCode === RC.CONTINUE_AUTHENTICATION && conn.authState !== undefined)) {
    return runAuthStep(conn, p.properties?.authenticationData, true)
  }
  throw new MqttError(RC.PROTOCOL_ERROR, `unexpected AUTH reason code 0x${p.reasonCode.toString(16)}`)
}

/** Runs one step of the configured method and answers with AUTH, CONNACK or DISCONNECT. */
export function runAuthStep(conn: Connection, data: Buffer | undefined, reauth: boolean): void | Promise<void> {
  const method = conn.broker.authMethods.get(conn.authMethod!)!
  const ctx = { clientId: conn.clientId, username: conn.username, state: conn.authState, reauth }
  const apply = (r: AuthStep) => {
    conn.authState = ctx.state
    if (conn.state === 'closed') return
    if (r.result === 'continue') {
      conn.authState ??= true
      conn.sendPacket({ cmd: 'auth', reasonCode: RC.CONTINUE_AUTHENTICATION, properties: { authenticationMethod: conn.authMethod, authenticationData: r.data } })
      return
    }
    conn.authState = undefined
    if (r.result === 'success') {
      if (r.username !== undefined) conn.username = r.username
      if (reauth) {
        conn.sendPacket({ cmd: 'auth', reasonCode: RC.SUCCESS, properties: { authenticationMethod: conn.authMethod, authenticationData: r.data } })
        return
      }
      // an address with recent failures waits on success too (see security.loginDelay)
      const delay = loginDelay(conn, conn.username, false)
      if (delay === 0) return completePending(conn, r.data)
      return Bun.sleep(delay).then(() => { if (conn.state !== 'closed') completePending(conn, r.data) })
    }
    const reason = r.reason ?? RC.NOT_AUTHORIZED
    if (reauth) conn.disconnect(reason, 're-authentication failed')
    else return refuseLogin(conn, reason, 'authentication failed', `${conn.authMethod} failed`)
  }
  const r = method.step(ctx, data)
  if (r instanceof Promise) return r.then(apply)
  return apply(r)
}

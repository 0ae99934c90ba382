import type { Authenticator, AuthRequest, AuthResult } from './types.ts'

/**
 * Client certificate identity (like Mosquitto's use_identity_as_username): a client whose
 * certificate chains to the configured CA is authenticated, and its username becomes the
 * certificate's subject CN or first DNS/email/URI subject alternative name. Without a
 * verified certificate it defers to the next authenticator.
 */
export function certIdentity(source: 'cn' | 'san'): Authenticator {
  return {
    name: 'certificate',
    authenticate(req: AuthRequest): AuthResult {
      const cert = req.cert
      if (cert === undefined || !cert.authorized) return { decision: 'defer', detail: 'no verified client certificate' }
      const name = source === 'cn' ? cert.cn : sanName(cert.sans)
      if (name === undefined || name === '') return { decision: 'deny', reason: 0x87, detail: `certificate has no ${source === 'cn' ? 'subject CN' : 'DNS/email/URI SAN'}` }
      // the certificate names the user: a different username in CONNECT is refused
      if (req.username !== undefined && req.username !== name) {
        return { decision: 'deny', reason: 0x86, detail: `username ${JSON.stringify(req.username)} does not match the certificate (${name})` }
      }
      return { decision: 'allow', username: name, detail: `certificate ${cert.fingerprint}` }
    },
  }
}

function sanName(sans: string[]): string | undefined {
  for (const s of sans) {
    const m = /^(DNS|email|URI):(.+)$/.exec(s)
    if (m !== null) return m[2]
  }
  return undefined
}

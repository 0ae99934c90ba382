/**
 * Test certificates made at test time with the openssl command (Debian package openssl, a
 * dependency of ca-certificates). EC P-256 keys: a whole set takes well under a second.
 * Use with `await using certs = await makeCerts()`; the temp dir goes on dispose.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface KeyPair {
  cert: string
  key: string
}

export interface IssueOpts {
  cn: string
  /** subjectAltName entries in openssl syntax: "DNS:x", "IP:127.0.0.1", "email:a@b". */
  sans?: string[]
  /** Signing CA (default: the main test CA). */
  ca?: KeyPair
  usage?: 'serverAuth' | 'clientAuth'
  /** Already expired when true. */
  expired?: boolean
}

export interface TestCerts extends AsyncDisposable {
  dir: string
  /** The CA that signs the server and the client certificates. */
  ca: KeyPair
  /** A second, unrelated CA. */
  otherCa: KeyPair
  /** Server certificate for 127.0.0.1 and localhost (SAN IP + DNS), signed by ca. */
  server: KeyPair
  /** CN=alice, SAN DNS:alice.example and email:alice@example.com, signed by ca. */
  alice: KeyPair
  /** CN=mallory with the same SANs as alice, signed by otherCa. */
  mallory: KeyPair
  /** CN=alice, signed by ca, expired. */
  expired: KeyPair
  /** Makes another certificate in dir (files <name>.pem and <name>.key). */
  issue(name: string, o: IssueOpts): Promise<KeyPair>
  /** A path inside dir. */
  path(name: string): string
  cleanup(): Promise<void>
}

export async function makeCerts(): Promise<TestCerts> {
  if (Bun.which('openssl') === null) throw new Error('makeCerts: the openssl command is missing (apt-get install openssl)')
  const dir = await mkdtemp(join(tmpdir(), 'vmqtt-certs-'))
  const path = (name: string) => join(dir, name)
  const cleanup = () => rm(dir, { recursive: true, force: true })
  try {
    const root = async (name: string, cn: string): Promise<KeyPair> => {
      const p = { cert: path(`${name}.pem`), key: path(`${name}.key`) }
      await openssl('req', '-x509', ...EC, '-nodes', '-keyout', p.key, '-out', p.cert, '-days', '3650', '-subj', `/CN=${cn}`,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
      return p
    }
    const [ca, otherCa] = await Promise.all([root('ca', 'vmqtt test CA'), root('other-ca', 'unrelated test CA')])
    const issue = async (name: string, o: IssueOpts): Promise<KeyPair> => {
      const p = { cert: path(`${name}.pem`), key: path(`${name}.key`) }
      const signer = o.ca ?? ca
      const csr = path(`${name}.csr`), ext = path(`${name}.ext`)
      await openssl('req', '-new', ...EC, '-nodes', '-keyout', p.key, '-out', csr, '-subj', `/CN=${o.cn}`)
      const lines = [`extendedKeyUsage=${o.usage ?? 'clientAuth'}`]
      if (o.sans !== undefined && o.sans.length > 0) lines.push(`subjectAltName=${o.sans.join(',')}`)
      await writeFile(ext, `${lines.join('\n')}\n`)
      const sign = ['x509', '-req', '-in', csr, '-CA', signer.cert, '-CAkey', signer.key, '-set_serial', serial(), '-out', p.cert, '-extfile', ext]
      if (o.expired !== true) await openssl(...sign, '-days', '3650')
      else {
        // openssl 3.0-3.3: a negative -days gives notAfter < now; 3.4+ has -not_before/-not_after
        try {
          await openssl(...sign, '-days', '-1')
        } catch {
          await openssl(...sign, '-not_before', '20000101000000Z', '-not_after', '20010101000000Z')
        }
      }
      return p
    }
    const aliceSans = ['DNS:alice.example', 'email:alice@example.com']
    const [server, alice, mallory, expired] = await Promise.all([
      issue('server', { cn: 'localhost', sans: ['IP:127.0.0.1', 'DNS:localhost'], usage: 'serverAuth' }),
      issue('alice', { cn: 'alice', sans: aliceSans }),
      issue('mallory', { cn: 'mallory', sans: aliceSans, ca: otherCa }),
      issue('expired', { cn: 'alice', sans: aliceSans, expired: true }),
    ])
    return { dir, ca, otherCa, server, alice, mallory, expired, issue, path, cleanup, [Symbol.asyncDispose]: cleanup }
  } catch (e) {
    await cleanup()
    throw e
  }
}

/** A random serial (no shared serial file, so certificates can be made in parallel). */
const serial = () => `0x1${Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex')}`

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']

async function openssl(...args: string[]): Promise<void> {
  const p = Bun.spawn(['openssl', ...args], { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited])
  if (code !== 0) throw new Error(`openssl ${args.slice(0, 2).join(' ')} failed (exit ${code}): ${err.trim()}`)
}

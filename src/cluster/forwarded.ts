import { createHmac, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Identity } from '../auth/identity.ts'

/**
 * The internal route one replica forwards a request to: `/_cluster/forward<the public path>`, carrying
 * the identity the first replica already authenticated, signed with CLUSTER_SECRET (HMAC-SHA256 over the
 * method, the path, the identity and the time). The users' credentials never travel: the forwarder strips
 * them, and the owner acts for the signed identity, checking ownership as it does for its own requests.
 * Without a valid signature the internal route does not exist (404), so it cannot be forged from outside;
 * with REDIS_URL unset the route is not even parsed (no rewriteUrl is installed).
 */
export const FORWARD_PREFIX = '/_cluster/forward'
export const HEADERS = {
  identity: 'x-warden-forwarded-identity',
  at: 'x-warden-forwarded-at',
  signature: 'x-warden-forwarded-signature',
} as const
/** a signed request older (or newer) than this is refused: replicas' clocks agree within it, a replay does not */
const MAX_SKEW_MS = 30_000
/** what the rewrite leaves of a refused forward: a path no route has, so a 404 */
const REFUSED_PATH = '/_cluster/refused'

function signature (secret: string, method: string, url: string, identity: string, at: string): string {
  return createHmac('sha256', secret).update(`${method}\n${url}\n${identity}\n${at}`).digest('hex')
}

/** The headers that make `method url` (url under FORWARD_PREFIX) a forward acting for `identity`. */
export function signForward (secret: string, method: string, url: string, identity: Identity, nowMs = Date.now()): Record<string, string> {
  const encoded = Buffer.from(JSON.stringify({ tenant: identity.tenant, user: identity.user })).toString('base64url')
  const at = String(nowMs)
  return { [HEADERS.identity]: encoded, [HEADERS.at]: at, [HEADERS.signature]: signature(secret, method, url, encoded, at) }
}

const forwardedIdentities = new WeakMap<IncomingMessage, Identity>()

/** The identity a verified forward acts for; null for every request that is not one. */
export function forwardedIdentity (raw: IncomingMessage): Identity | null {
  return forwardedIdentities.get(raw) ?? null
}

/**
 * Fastify's rewriteUrl (cluster mode only): a request under FORWARD_PREFIX with a valid signature is
 * served at its public path for the signed identity; one without is routed nowhere (404).
 */
export function verifyingRewrite (secret: string): (raw: IncomingMessage) => string {
  return (raw) => {
    const url = raw.url ?? '/'
    if (!url.startsWith(`${FORWARD_PREFIX}/`)) return url
    const identity = verify(secret, raw, url)
    if (identity === null) return REFUSED_PATH
    forwardedIdentities.set(raw, identity)
    return url.slice(FORWARD_PREFIX.length)
  }
}

function verify (secret: string, raw: IncomingMessage, url: string): Identity | null {
  const [encoded, at, given] = [raw.headers[HEADERS.identity], raw.headers[HEADERS.at], raw.headers[HEADERS.signature]]
  if (typeof encoded !== 'string' || typeof at !== 'string' || typeof given !== 'string') return null
  if (!/^\d{1,16}$/.test(at) || Math.abs(Date.now() - Number(at)) > MAX_SKEW_MS) return null
  const expected = Buffer.from(signature(secret, raw.method ?? 'GET', url, encoded, at), 'hex')
  const offered = Buffer.from(given, 'hex')
  if (offered.length !== expected.length || !timingSafeEqual(offered, expected)) return null
  try {
    const parsed = JSON.parse(Buffer.from(encoded, 'base64url').toString()) as Identity
    if (typeof parsed.tenant !== 'string' || (parsed.user !== null && typeof parsed.user !== 'string')) return null
    return { tenant: parsed.tenant, user: parsed.user }
  } catch {
    return null
  }
}

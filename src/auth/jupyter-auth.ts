import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { AuthConfig, JupyterSettings } from '../config.ts'
import { createApiKeyCheck } from './api-key.ts'
import type { Identity } from './identity.ts'

/** Kernels live in their own tenant: nothing of LibreChat's files or users is reachable through them. */
export const JUPYTER_TENANT = 'jupyter'
const SESSION_TTL_MS = 7 * 24 * 3_600_000

/** What a Jupyter request presented, already picked out of its URL, headers and cookies. */
export interface JupyterCredentials {
  /** `?token=` (Open WebUI, and @jupyterlab/services on the WebSocket URL), `Authorization: token` or `Bearer`, or `X-API-Key` */
  token: string | null
  /** the login session cookie (password mode) */
  session: string | null
  /** the `_xsrf` cookie and the `X-XSRFToken` header: a cookie-authenticated change must carry both, equal */
  xsrfCookie: string | null
  xsrfHeader: string | null
  /** GET and HEAD change nothing and need no XSRF check; WebSocket handshakes are GETs */
  isSafeMethod: boolean
}

export type JupyterAuthResult = { ok: true, identity: Identity } | { ok: false, reason: string }

/**
 * The authentication Open WebUI's Jupyter client can do (../shared/spec/openwebui-jupyter.md §3): a token
 * (a Warden API key or JUPYTER_TOKEN), or a password login with an `_xsrf` cookie (JUPYTER_PASSWORD), or
 * nothing where AUTH=none. A kernel belongs to the credential that made it: each token is its own owner.
 */
export class JupyterAuth {
  private readonly isValidToken: (presented: unknown) => boolean
  private readonly sessions = new Map<string, number>()
  readonly open: boolean
  readonly passwordEnabled: boolean

  constructor (auth: AuthConfig, private readonly settings: JupyterSettings) {
    this.isValidToken = createApiKeyCheck([...auth.apiKeys, ...(settings.token === undefined ? [] : [settings.token])])
    this.passwordEnabled = settings.password !== undefined
    this.open = auth.methods.includes('none') && settings.token === undefined && !this.passwordEnabled
  }

  authenticate (credentials: JupyterCredentials): JupyterAuthResult {
    if (credentials.token !== null) {
      if (!this.isValidToken(credentials.token)) return { ok: false, reason: 'The token is not valid.' }
      return { ok: true, identity: { tenant: JUPYTER_TENANT, user: `token-${digest(credentials.token).slice(0, 16)}` } }
    }
    if (credentials.session !== null && this.isSession(credentials.session)) {
      if (!credentials.isSafeMethod && (credentials.xsrfCookie === null || credentials.xsrfCookie !== credentials.xsrfHeader)) {
        return { ok: false, reason: 'The _xsrf cookie and the X-XSRFToken header are missing or differ.' }
      }
      return { ok: true, identity: { tenant: JUPYTER_TENANT, user: 'password' } }
    }
    if (this.open) return { ok: true, identity: { tenant: JUPYTER_TENANT, user: null } }
    return { ok: false, reason: this.passwordEnabled ? 'Log in first (GET and POST login), or send a token.' : 'A token is required: ?token= or Authorization: token.' }
  }

  /** A password login: a new session id for the cookie when the password is right, else null. */
  login (password: string): string | null {
    const expected = this.settings.password
    if (expected === undefined || !constantTimeEqual(password, expected)) return null
    const session = randomBytes(24).toString('base64url')
    this.sessions.set(session, Date.now() + SESSION_TTL_MS)
    return session
  }

  private isSession (session: string): boolean {
    const expires = this.sessions.get(session)
    if (expires === undefined) return false
    if (expires < Date.now()) {
      this.sessions.delete(session)
      return false
    }
    return true
  }
}

export function newXsrfToken (): string {
  return randomBytes(18).toString('base64url')
}

function digest (value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex')
}

function constantTimeEqual (a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest())
}

/** Who a request acts for: the owner recorded on every stored file. */
export interface Identity {
  tenant: string
  user: string
}

export const DEFAULT_TENANT = 'default'
export const ANONYMOUS = 'anonymous'

const USER_ID = /^[A-Za-z0-9_.:@-]{1,128}$/

/** With an API key, the user is whoever LibreChat says (User-Id header, then body user_id). */
export function identityFromHints (header: unknown, bodyUserId: unknown): Identity {
  const user = [header, bodyUserId].find((value): value is string => typeof value === 'string' && USER_ID.test(value))
  return { tenant: DEFAULT_TENANT, user: user ?? ANONYMOUS }
}

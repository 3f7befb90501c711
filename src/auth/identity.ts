import type { FileKind, FileOwner } from '../storage/file-store.ts'

/**
 * Who a request acts for. A LibreChat JWT names its user; with an API key (or no auth) the caller is
 * LibreChat's server, a trusted service, which names the user in a header, the body or the query.
 * `user: null` is that service acting for no one in particular: it reaches every file of the tenant,
 * which keeps older LibreChat versions (which name no user on some calls) working.
 */
export interface Identity {
  tenant: string
  user: string | null
}

/** The same owner: tenant and user. */
export function sameOwner (a: Identity, b: Identity): boolean {
  return a.tenant === b.tenant && a.user === b.user
}

/** One string per owner (tenant and user), for maps and for the worker a run claims (src/pool/worker.ts). */
export function ownerKey (owner: Identity): string {
  return `${owner.tenant}\u0000${owner.user ?? ''}`
}

/** LibreChat's own default `tenant_id` for single-tenant deployments (spec §2.2). */
export const DEFAULT_TENANT = 'legacy'
/** Owner of a file stored without a user: any user of the tenant may use it. */
export const ANY_USER = '*'

const USER_ID = /^[A-Za-z0-9_.:@-]{1,128}$/

/** A plausible user id: what a header, a body field or a token's `sub` must be to name a user. */
export function isUserId (value: string): boolean {
  return USER_ID.test(value)
}

/** The first hint that is a plausible user id, in the order given. */
export function identityFromHints (...hints: unknown[]): Identity {
  const user = hints.find((value): value is string => typeof value === 'string' && USER_ID.test(value))
  return { tenant: DEFAULT_TENANT, user: user ?? null }
}

export function ownerFor (identity: Identity): FileOwner {
  return { tenant: identity.tenant, user: identity.user ?? ANY_USER }
}

/**
 * `user` files are their uploader's alone, as are an execution's outputs; `agent` and `skill` files are
 * shared within the tenant (spec §3.1.1). Nothing crosses tenants.
 */
export function canAccess (identity: Identity, file: { kind: FileKind, owner: FileOwner }): boolean {
  if (file.owner.tenant !== identity.tenant) return false
  if (identity.user === null || file.owner.user === ANY_USER) return true
  if (file.kind === 'agent' || file.kind === 'skill') return true
  return file.owner.user === identity.user
}

import type { Identity } from '../auth/identity.ts'
import { WARDEN_ERRORS, WardenError } from '../errors.ts'

/**
 * Counts one user's executions in and out: the process's own count (below, the default), or the replicas'
 * shared one (`cluster/shared-concurrency.ts`), which needs a round trip and so may answer later.
 */
export interface Admission {
  /** Count an execution in, or refuse with 429; call the returned function when it is over. */
  enter (identity: Identity): (() => void) | Promise<() => void>
}

/**
 * A cap on one user's executions at a time, so one conversation cannot take every worker. Only users
 * the request names count: a trusted service acting for no one in particular is not capped here.
 */
export class UserConcurrency implements Admission {
  private readonly running = new Map<string, number>()

  constructor (private readonly limit: number) {}

  /** Count an execution in, or refuse with 429; call the returned function when it is over. */
  enter (identity: Identity): () => void {
    if (this.limit === 0 || identity.user === null) return () => {}
    const key = `${identity.tenant}\u0000${identity.user}`
    const count = this.running.get(key) ?? 0
    if (count >= this.limit) {
      throw new WardenError(WARDEN_ERRORS.userBusy, `This user already has ${count} executions running (the limit is ${this.limit}).`,
        { retryAfterSeconds: 1 })
    }
    this.running.set(key, count + 1)
    let left = false
    return () => {
      if (left) return
      left = true
      const remaining = (this.running.get(key) ?? 1) - 1
      if (remaining === 0) this.running.delete(key)
      else this.running.set(key, remaining)
    }
  }
}

import { createHash, timingSafeEqual } from 'node:crypto'

/**
 * Constant-time check of an `x-api-key` value against the configured keys. Both sides are hashed
 * first, so neither the keys' lengths nor their bytes leak through timing.
 */
export function createApiKeyCheck (keys: string[]): (presented: unknown) => boolean {
  const digests = keys.map((key) => digest(key))
  return (presented) => {
    if (typeof presented !== 'string' || presented === '') return false
    const candidate = digest(presented)
    let match = false
    for (const key of digests) match = timingSafeEqual(candidate, key) || match
    return match
  }
}

function digest (value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest()
}

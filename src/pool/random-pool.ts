import { randomFillSync } from 'node:crypto'

const POOL_BYTES = 4096
let pool = Buffer.alloc(0)
let offset = 0

/**
 * `size` cryptographically random bytes, cut from a pool refilled 4 KiB at a time: a spawn token and a
 * run marker per execution cost one system call per ~128 executions instead of two each (as nanoid does).
 */
export function randomBytesFromPool (size: number): Buffer {
  if (offset + size > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(Math.max(POOL_BYTES, size)))
    offset = 0
  }
  const bytes = Buffer.from(pool.subarray(offset, offset + size))
  offset += size
  return bytes
}

import os from 'node:os'
import type { Config } from './config.ts'
import { formatBytes } from './units.ts'

export interface Capacity {
  /** worker slots each zygote has: an outside uid and a cgroup each */
  slotsPerZygote: number
  /** single-use workers alive at once (warm or busy) */
  poolMax: number
  /** live workers (kernels, paused runs) at once: their own budget, never taken from the pool */
  liveMax: number
  /** what every worker could take at once at its memory limit, against the machine's memory */
  memoryLimitsBytes: number
  hostMemoryBytes: number
  warnings: string[]
}

/**
 * How many workers of each kind a server holds, computed once from the configuration and the machine.
 * A slot is free again only once its last worker's cgroup is empty, so single-use workers get twice their
 * number of slots (one finishing, one starting); live workers hold theirs for long.
 */
export function computeCapacity (config: Pick<Config, 'pool' | 'live' | 'limits'>, hostMemoryBytes = os.totalmem()): Capacity {
  const zygotes = config.pool.zygotes
  const liveMax = config.pool.mode === 'cold' ? 0 : config.live.max
  // prepared workers (interpreters started ahead) are taken from the pool for good: slots of their own
  const preparedMax = config.pool.mode === 'cold' ? 0 : config.pool.preparedMax
  const slotsPerZygote = Math.ceil(config.pool.max / zygotes) * 2 + Math.ceil((liveMax + preparedMax) / zygotes) + 2
  const memoryLimitsBytes = (config.pool.max + liveMax) * config.limits.memoryBytes
  const warnings: string[] = []
  // workers rarely use their whole limit (an idle one takes ~2 MiB of its own), so only a large
  // overcommit is worth a warning
  if (memoryLimitsBytes > 4 * hostMemoryBytes) {
    warnings.push(`POOL_MAX + MAX_LIVE_WORKERS workers at MEMORY_LIMIT_MB each could take ${formatBytes(memoryLimitsBytes)}, ` +
      `more than four times this machine's ${formatBytes(hostMemoryBytes)}`)
  }
  return { slotsPerZygote, poolMax: config.pool.max, liveMax, memoryLimitsBytes, hostMemoryBytes, warnings }
}

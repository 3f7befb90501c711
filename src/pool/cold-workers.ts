import type { Worker } from './worker.ts'
import type { PoolStats } from './worker-pool.ts'
import type { Zygote } from './zygote.ts'

/**
 * The baseline the benchmark compares against: no prewarming. Every execution starts a fresh jail and
 * a fresh interpreter with nothing preloaded, runs, and the jail is torn down. Same jails, same
 * limits, same protocol: only the pool is missing.
 */
export class ColdWorkers {
  private readonly zygotes = new Map<Worker, Zygote>()
  private nextIndex = 0
  private spawned = 0

  constructor (private readonly startZygote: (index: number) => Promise<Zygote>, private readonly maxIndex: number) {}

  async acquire (): Promise<Worker> {
    const index = this.nextIndex
    this.nextIndex = (this.nextIndex + 1) % this.maxIndex
    const zygote = await this.startZygote(index)
    try {
      const worker = await zygote.spawnWorker()
      this.zygotes.set(worker, zygote)
      this.spawned++
      return worker
    } catch (error) {
      await zygote.close()
      throw error
    }
  }

  async release (worker: Worker): Promise<void> {
    worker.dispose()
    const zygote = this.zygotes.get(worker)
    this.zygotes.delete(worker)
    await zygote?.close()
  }

  stats (): PoolStats {
    return {
      warm: 0,
      busy: this.zygotes.size,
      starting: 0,
      waiting: 0,
      zygotesAlive: 1,
      zygotes: 1,
      spawned: this.spawned,
      acquiredWarm: 0,
      acquiredCold: this.spawned,
      jailsStarted: this.spawned,
      slots: {},
    }
  }

  async ready (): Promise<void> {}

  async close (): Promise<void> {
    await Promise.all([...this.zygotes.values()].map((zygote) => zygote.close()))
  }
}

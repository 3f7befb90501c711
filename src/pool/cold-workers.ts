import type { Worker } from './worker.ts'
import type { PoolStats, WorkerProvider } from './worker-pool.ts'
import type { Zygote } from './zygote.ts'

/**
 * The baseline the benchmark compares against: no prewarming. Every execution starts a fresh jail and
 * a fresh interpreter with nothing preloaded, runs, and the jail is torn down. Same jails, same
 * limits, same protocol: only the pool is missing. Its statistics count what it did, nothing more.
 */
export class ColdWorkers implements WorkerProvider {
  private readonly zygotes = new Map<Worker, Zygote>()
  private nextIndex = 0
  private started = 0

  constructor (private readonly startZygote: (index: number) => Promise<Zygote>, private readonly maxIndex: number) {}

  async acquire (): Promise<Worker> {
    const index = this.nextIndex
    this.nextIndex = (this.nextIndex + 1) % this.maxIndex
    const zygote = await this.startZygote(index)
    this.started++
    try {
      const worker = await zygote.spawnWorker()
      this.zygotes.set(worker, zygote)
      return worker
    } catch (error) {
      await zygote.close()
      throw error
    }
  }

  release (worker: Worker): void {
    worker.dispose()
    const zygote = this.zygotes.get(worker)
    this.zygotes.delete(worker)
    zygote?.close().catch(() => {})
  }

  stats (): PoolStats {
    return {
      warm: 0,
      busy: this.zygotes.size,
      starting: 0,
      waiting: 0,
      zygotesAlive: this.zygotes.size,
      zygotes: this.zygotes.size,
      spawned: this.started,
      acquiredWarm: 0,
      acquiredCold: this.started,
      jailsStarted: this.started,
      slots: {},
    }
  }

  async ready (): Promise<void> {}

  async close (): Promise<void> {
    await Promise.all([...this.zygotes.values()].map((zygote) => zygote.close()))
  }
}

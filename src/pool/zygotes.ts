import type { Logger } from 'pino'
import type { Worker } from './worker.ts'
import type { Zygote } from './zygote.ts'

const RESTART_BACKOFF_MS = [1_000, 2_000, 5_000, 10_000, 30_000]
const SLOT_WAIT_MS = 10_000

export interface ZygoteSetStats {
  alive: number
  total: number
  /** jails (zygotes) started since the server started, restarts included */
  jailsStarted: number
  /** worker slots of all zygotes by state */
  slots: Record<string, number>
}

/**
 * The zygotes of a server: forks workers from whichever has a free slot, notices at once when one dies
 * (its workers and their runs end with it) and restarts it with backoff, without a server restart.
 */
export class ZygoteSet {
  private readonly zygotes: Array<Zygote | null>
  private closing = false
  private jailsStarted: number
  private recovering = 0
  private readonly lostListeners: Array<(zygote: Zygote) => void> = []

  private constructor (private readonly startZygote: (index: number) => Promise<Zygote>, zygotes: Zygote[], private readonly log: Logger) {
    this.zygotes = zygotes
    this.jailsStarted = zygotes.length
    zygotes.forEach((zygote, index) => this.supervise(zygote, index))
  }

  static async start (count: number, startZygote: (index: number) => Promise<Zygote>, log: Logger): Promise<ZygoteSet> {
    const started = await Promise.allSettled(Array.from({ length: count }, (_, index) => startZygote(index)))
    const failed = started.find((result) => result.status === 'rejected')
    if (failed !== undefined) {
      await Promise.all(started.map((result) => result.status === 'fulfilled' ? result.value.close() : undefined))
      throw (failed as PromiseRejectedResult).reason
    }
    return new ZygoteSet(startZygote, started.map((result) => (result as PromiseFulfilledResult<Zygote>).value), log)
  }

  get hasLiveZygote (): boolean { return this.zygotes.some((zygote) => zygote?.isAlive === true) }
  /** A zygote died and its first restart is under way: requests may wait for it rather than fail. */
  get isRecovering (): boolean { return this.recovering > 0 }

  /** Called with a zygote that died (every worker it held is gone). */
  onLost (listener: (zygote: Zygote) => void): void { this.lostListeners.push(listener) }

  /** Fork a fresh worker from a zygote with a free slot, waiting a little for one to free up. */
  async spawn (): Promise<Worker> {
    return await (await this.zygoteWithFreeSlot()).spawnWorker()
  }

  /** True when `worker` came from `zygote` (its id starts with the zygote's name). */
  static isFrom (worker: Worker, zygote: Zygote): boolean {
    return worker.id.startsWith(`${zygote.name}/`)
  }

  stats (): ZygoteSetStats {
    const slots: Record<string, number> = {}
    for (const zygote of this.zygotes) {
      for (const [state, count] of Object.entries(zygote?.slotStates() ?? {})) slots[state] = (slots[state] ?? 0) + count
    }
    return {
      alive: this.zygotes.filter((zygote) => zygote?.isAlive === true).length,
      total: this.zygotes.length,
      jailsStarted: this.jailsStarted,
      slots,
    }
  }

  async close (): Promise<void> {
    this.closing = true
    await Promise.all(this.zygotes.map((zygote) => zygote?.close()))
  }

  /**
   * A zygote that can fork now. Slots of finished workers become free a few ms after the run (once the
   * worker's pid namespace is gone and its cgroup is empty); when none is free yet, wait for one.
   */
  private async zygoteWithFreeSlot (): Promise<Zygote> {
    const deadline = Date.now() + SLOT_WAIT_MS
    for (;;) {
      const alive = this.zygotes.filter((zygote): zygote is Zygote => zygote?.isAlive === true)
      if (alive.length === 0) throw new Error('no zygote is running')
      const best = alive.filter((zygote) => zygote.freeSlots > 0).sort((a, b) => b.freeSlots - a.freeSlots)[0]
      if (best !== undefined) return best
      const remainingMs = deadline - Date.now()
      if (remainingMs <= 0) throw new Error('no worker slot became free in time')
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.any(alive.map((zygote) => zygote.waitForFreeSlot())),
        new Promise((resolve) => { timer = setTimeout(resolve, remainingMs) }),
      ]).catch(() => {})
      clearTimeout(timer)
    }
  }

  private supervise (zygote: Zygote, index: number, attempt = 0): void {
    zygote.exited.then(async () => {
      if (this.closing) return
      this.zygotes[index] = null
      if (attempt === 0) {
        this.recovering++
        for (const listener of this.lostListeners) listener(zygote)
      }
      const delayMs = RESTART_BACKOFF_MS[Math.min(attempt, RESTART_BACKOFF_MS.length - 1)] ?? 30_000
      this.log.error({ zygote: zygote.name, restartInMs: delayMs }, 'zygote exited; restarting')
      await new Promise((resolve) => setTimeout(resolve, delayMs).unref())
      if (this.closing) return
      try {
        this.jailsStarted++
        const next = await this.startZygote(index)
        if (this.closing) { await next.close(); return }
        this.zygotes[index] = next
        this.supervise(next, index, 0)
      } catch (error) {
        this.log.error({ err: error, zygote: zygote.name }, 'zygote restart failed')
        this.supervise(zygote, index, attempt + 1)
      } finally {
        if (attempt === 0) this.recovering--
      }
    }, () => {})
  }
}

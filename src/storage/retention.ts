import type { FileStore, StorageLog } from './file-store.ts'

/** Node fires a setTimeout longer than 2^31-1 ms (~24.8 days) after 1 ms instead: clamp. */
const MAX_TIMER_MS = 2 ** 31 - 1

export interface RetentionOptions {
  /** Keep a file this long after its last use; LibreChat reuses files younger than 23 h (spec §3.7). */
  ttlMs: number
  /** Pause between the end of one sweep and the start of the next. */
  intervalMs: number
}

export interface RetentionSweeper {
  /** No sweep starts after this; resolves once a sweep in progress has finished. */
  stop (): Promise<void>
}

/**
 * Sweep expired files now and then every `intervalMs` after the previous sweep ended, so runs never
 * overlap. The timer is unref()ed: it never keeps the process alive. A failed sweep is logged at warn
 * and retried at the next interval.
 */
export function startRetentionSweeper (
  store: Pick<FileStore, 'sweep'>,
  options: RetentionOptions,
  log: StorageLog
): RetentionSweeper {
  const { ttlMs, intervalMs } = options
  if (!(ttlMs > 0)) throw new RangeError('ttlMs must be a positive number of milliseconds')
  if (!(intervalMs > 0)) throw new RangeError('intervalMs must be a positive number of milliseconds')

  let isStopped = false
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> = Promise.resolve()

  async function sweepOnce (): Promise<void> {
    try {
      const removed = await store.sweep(ttlMs)
      if (removed > 0) log.info({ removed }, 'expired files removed')
    } catch (err) {
      log.warn({ err }, 'file sweep failed')
    }
  }

  function run (): void {
    timer = undefined
    running = sweepOnce().then(() => {
      if (isStopped) return
      timer = setTimeout(run, Math.min(intervalMs, MAX_TIMER_MS))
      timer.unref()
    })
  }

  run()
  return {
    async stop () {
      isStopped = true
      clearTimeout(timer)
      await running
    },
  }
}

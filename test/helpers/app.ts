import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pino } from 'pino'
import { buildApp } from '../../src/app.ts'
import { loadConfig } from '../../src/config.ts'
import type { WorkerSource } from '../../src/exec/execute.ts'
import { checkLanguages, type LanguageAvailability } from '../../src/exec/languages/index.ts'
import { Metrics } from '../../src/metrics.ts'
import type { WorkerJob } from '../../src/pool/run.ts'
import type { Worker } from '../../src/pool/worker.ts'
import type { PoolStats } from '../../src/pool/worker-pool.ts'
import type { ServiceState } from '../../src/services.ts'
import { FakeWorker, type FakeBehaviour } from './fake-worker.ts'
import { MemoryFileStore } from './memory-store.ts'
import { WorkspaceStore } from '../../src/storage/workspaces.ts'

export const API_KEY = 'in-process-key'

const POOL_STATS: PoolStats = {
  warm: 2, busy: 0, starting: 0, waiting: 0, zygotesAlive: 1, zygotes: 1, spawned: 2, acquiredWarm: 0, acquiredCold: 0, jailsStarted: 1, slots: { free: 6, occupied: 2 },
}

export interface InProcessOptions {
  env?: Record<string, string>
  /** what the "code" does; by default it prints what a one-line `print(...)` of a literal would */
  behave?: (job: WorkerJob) => FakeBehaviour | Promise<FakeBehaviour>
  /** replaces the worker source (e.g. one that refuses with a pool error) */
  workers?: WorkerSource
  languages?: LanguageAvailability
}

export interface InProcessApp {
  app: Awaited<ReturnType<typeof buildApp>>
  store: MemoryFileStore
  /** the fake workers handed out, in order */
  workers: FakeWorker[]
  state: { ready: boolean, draining: boolean }
  close: () => Promise<void>
}

/** `print("x")` prints x: enough for the routes' tests, which are about HTTP and not about Python. */
function echoPrint (job: WorkerJob): FakeBehaviour {
  const printed = /^print\((['"])(.*)\1\)\s*$/s.exec(job.code)
  return printed !== null ? { stdout: `${printed[2]}\n` } : { stdout: '' }
}

/**
 * The real app (routes, hooks, schemas, error boundary, auth) on an in-memory store and fake workers:
 * requests are `app.inject`ed, no jail and no socket, so a test takes milliseconds.
 */
export async function inProcessApp (options: InProcessOptions = {}): Promise<InProcessApp> {
  const config = loadConfig({ CODE_API_KEY: API_KEY, ...options.env })
  const store = new MemoryFileStore()
  const workspaceDir = await mkdtemp(path.join(os.tmpdir(), 'warden-app-test-'))
  const workspaces = await WorkspaceStore.open(workspaceDir)
  const handedOut: FakeWorker[] = []
  const workers: WorkerSource = options.workers ?? {
    acquire: async () => {
      const worker = new FakeWorker(options.behave ?? echoPrint)
      handedOut.push(worker)
      return worker as unknown as Worker
    },
    release: (worker) => { (worker as unknown as FakeWorker).dispose() },
  }
  const state = { ready: true, draining: false }
  const languages = options.languages ?? checkLanguages()
  const serviceState = (): ServiceState => ({
    startedAt: Date.now(),
    version: 'test',
    driver: { name: 'bwrap', version: 'fake', launch: () => { throw new Error('no jail in process') } },
    cgroups: null,
    pool: POOL_STATS,
    live: null,
    languages,
    selfTest: state.ready ? { passed: true, checks: [], durationMs: 0 } : null,
    warnings: [],
  })
  const app = await buildApp(config, {
    store,
    workers,
    live: null,
    kernels: null,
    workspaces,
    state: serviceState,
    languages,
    metrics: new Metrics(() => POOL_STATS, store),
    isReady: () => state.ready,
    isDraining: () => state.draining,
    log: pino({ level: 'silent' }),
  })
  await app.ready()
  return {
    app,
    store,
    workers: handedOut,
    state,
    close: async () => {
      await app.close()
      await rm(workspaceDir, { recursive: true, force: true })
    },
  }
}

/** Headers with the API key (and JSON). */
export function authed (extra: Record<string, string> = {}): Record<string, string> {
  return { 'x-api-key': API_KEY, ...extra }
}

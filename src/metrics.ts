import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { CompileCacheStats } from './exec/compile-cache.ts'
import type { ExecutionResult } from './exec/execute.ts'
import type { LiveStats } from './live/registry.ts'
import type { PoolStats } from './pool/worker-pool.ts'
import type { FileStore } from './storage/file-store.ts'

/** How an execution ended, as counted in `warden_executions_total`. */
export type ExecutionOutcome = 'ok' | 'error' | 'compile_error' | 'timeout' | 'oom' | 'output_limit' | 'killed' | 'rejected'

const LATENCY_BUCKETS_S = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
const STORAGE_CACHE_MS = 5_000

/**
 * Everything /metrics exposes, in Prometheus's text format. Counters are bumped by the routes; pool and
 * storage gauges are read when scraped, so they cost nothing between scrapes.
 */
export class Metrics {
  readonly registry = new Registry()
  private readonly executions: Counter<'language' | 'outcome'>
  private readonly duration: Histogram<'language'>
  private readonly phases: Histogram<'phase'>
  private readonly spawns: Histogram
  private readonly transfers: Counter<'direction'>
  private readonly transferBytes: Counter<'direction'>
  private storageCache: { at: number, value: { files: number, bytes: number } } | null = null

  private readonly ptcRuns: Counter<'outcome'>
  private readonly ptcRounds: Counter
  private readonly ptcToolCalls: Counter
  /** paused and running tool-calling runs, once the API has made its ProgrammaticRuns */
  private programmatic: (() => { running: number, paused: number }) | null = null
  /** the replicas this one sees in the shared Redis (REDIS_URL) */
  private cluster: (() => { replicasAlive: number, redisReachable: boolean }) | null = null

  private readonly liveEvents: Counter<'kind' | 'event'>
  private readonly kernelEvents: Counter<'event'>
  private readonly cells: Histogram<'outcome'>
  /** registered once the API made its compile cache */
  private compileCache: Gauge[] = []

  constructor (pool: () => PoolStats, store: FileStore, live: () => LiveStats | null = () => null) {
    collectDefaultMetrics({ register: this.registry, prefix: 'warden_' })
    const registers = [this.registry]
    this.executions = new Counter({ name: 'warden_executions_total', help: 'Executions by language and outcome', labelNames: ['language', 'outcome'], registers })
    this.duration = new Histogram({ name: 'warden_execution_duration_seconds', help: 'Wall time of an execution, request to answer', labelNames: ['language'], buckets: LATENCY_BUCKETS_S, registers })
    this.phases = new Histogram({
      name: 'warden_execution_phase_seconds',
      help: 'Time in each phase: queue (waiting for a warm worker), stage (inputs into the worker), run (the code), collect (outputs, until the end of the run), store (outputs to disk)',
      labelNames: ['phase'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    })
    this.spawns = new Histogram({ name: 'warden_worker_spawn_seconds', help: 'Fork of a worker until it is isolated and ready', buckets: LATENCY_BUCKETS_S, registers })
    this.transfers = new Counter({ name: 'warden_file_transfers_total', help: 'Uploads and downloads', labelNames: ['direction'], registers })
    this.transferBytes = new Counter({ name: 'warden_file_transfer_bytes_total', help: 'Bytes uploaded and downloaded', labelNames: ['direction'], registers })
    const poolGauge = (name: string, help: string, labelNames: string[], read: (stats: PoolStats, gauge: Gauge) => void) =>
      new Gauge({ name, help, labelNames, registers, collect () { read(pool(), this) } })
    poolGauge('warden_pool_workers', 'Workers by state', ['state'], (stats, gauge) => {
      gauge.set({ state: 'warm' }, stats.warm)
      gauge.set({ state: 'busy' }, stats.busy)
      gauge.set({ state: 'starting' }, stats.starting)
    })
    poolGauge('warden_pool_waiting', 'Requests waiting for a worker', [], (stats, gauge) => gauge.set(stats.waiting))
    poolGauge('warden_pool_slots', 'Worker slots of all zygotes by state', ['state'], (stats, gauge) => {
      gauge.reset()
      for (const [state, count] of Object.entries(stats.slots)) gauge.set({ state }, count)
    })
    poolGauge('warden_zygotes_alive', 'Jails holding a warm interpreter', [], (stats, gauge) => gauge.set(stats.zygotesAlive))
    poolGauge('warden_pool_acquisitions_total', 'Executions that found a warm worker (hit) or waited for one (miss)', ['result'], (stats, gauge) => {
      gauge.set({ result: 'hit' }, stats.acquiredWarm)
      gauge.set({ result: 'miss' }, stats.acquiredCold)
    })
    liveWorkersGauge(registers, live)
    this.liveEvents = new Counter({ name: 'warden_live_workers_events_total', help: 'Live workers created and ended, by kind and event (created, stopped, expired, died, shutdown)', labelNames: ['kind', 'event'], registers })
    this.kernelEvents = new Counter({ name: 'warden_kernels_total', help: 'Jupyter kernels created and deleted (culled ones are live worker events "expired")', labelNames: ['event'], registers })
    this.cells = new Histogram({ name: 'warden_kernel_cell_seconds', help: 'Kernel cells by outcome (ok, error, limit, died, unavailable): request to reply', labelNames: ['outcome'], buckets: LATENCY_BUCKETS_S, registers })
    this.ptcRuns = new Counter({ name: 'warden_ptc_runs_total', help: 'Programmatic tool-calling runs by how they ended (completed, error, expired: no tool results in time, cancelled, unavailable)', labelNames: ['outcome'], registers })
    this.ptcRounds = new Counter({ name: 'warden_ptc_rounds_total', help: 'Rounds of tool calls: pauses of a run for its client to call tools', registers })
    this.ptcToolCalls = new Counter({ name: 'warden_ptc_tool_calls_total', help: 'Tool calls asked of clients by programmatic runs', registers })
    programmaticRunsGauge(registers, () => this.programmatic?.() ?? { running: 0, paused: 0 })
    clusterGauges(registers, () => this.cluster?.() ?? null)
    const storage = this.storage.bind(this)
    const storageGauge = (name: string, help: string, read: (usage: { files: number, bytes: number }) => number) =>
      new Gauge({ name, help, registers, async collect () { this.set(read(await storage(store))) } })
    storageGauge('warden_storage_files', 'Stored files', (usage) => usage.files)
    storageGauge('warden_storage_bytes', 'Bytes of stored files', (usage) => usage.bytes)
  }

  recordExecution (language: string, result: ExecutionResult): void {
    const status = result.outcome.status
    const outcome: ExecutionOutcome = status === 'OL' || status === 'EL' ? 'output_limit' : status
    this.executions.inc({ language, outcome })
    this.duration.observe({ language }, result.wallMs / 1000)
    const { run } = result.phases
    const observe = (phase: string, ms: number | null) => { if (ms !== null && ms >= 0) this.phases.observe({ phase }, ms / 1000) }
    observe('queue', result.phases.acquireMs)
    observe('stage', run.startedMs)
    // a run stopped by a limit has no done: it ran until its output closed
    observe('run', run.startedMs !== null ? (run.doneMs ?? run.closedMs) - run.startedMs : null)
    observe('collect', run.doneMs !== null ? run.closedMs - run.doneMs : null)
    observe('store', result.phases.storeMs)
  }

  recordKernel (event: 'created' | 'deleted'): void {
    this.kernelEvents.inc({ event })
  }

  recordCell (outcome: string, ms: number): void {
    this.cells.observe({ outcome }, ms / 1000)
  }

  recordLive (event: string, kind: string): void {
    this.liveEvents.inc({ kind, event })
  }

  watchCluster (view: () => { replicasAlive: number, redisReachable: boolean }): void {
    this.cluster = view
  }

  watchProgrammatic (stats: () => { running: number, paused: number }): void {
    this.programmatic = stats
  }

  /** The compile cache's counters and size, read when scraped. */
  watchCompileCache (stats: () => CompileCacheStats): void {
    const registers = [this.registry]
    this.compileCache = [new Gauge({
      name: 'warden_compile_cache_lookups_total',
      help: 'Compiled programs whose build was found kept (hit) or had to run (miss); programs that cannot be cached are not counted',
      labelNames: ['result'],
      registers,
      collect () {
        const { hits, misses } = stats()
        this.set({ result: 'hit' }, hits)
        this.set({ result: 'miss' }, misses)
      },
    }),
    new Gauge({ name: 'warden_compile_cache_evictions_total', help: 'Builds dropped from the compile cache to fit its size', registers, collect () { this.set(stats().evictions) } }),
    new Gauge({ name: 'warden_compile_cache_entries', help: 'Builds kept in the compile cache', registers, collect () { this.set(stats().entries) } }),
    new Gauge({ name: 'warden_compile_cache_bytes', help: 'Bytes of the builds kept in the compile cache (COMPILE_CACHE_MB bounds it)', registers, collect () { this.set(stats().bytes) } })]
  }

  recordProgrammaticRound (calls: number): void {
    this.ptcRounds.inc()
    this.ptcToolCalls.inc(calls)
  }

  recordProgrammaticEnd (outcome: string): void {
    this.ptcRuns.inc({ outcome })
  }

  recordRejected (language: string): void {
    this.executions.inc({ language, outcome: 'rejected' })
  }

  recordSpawn (ms: number): void {
    this.spawns.observe(ms / 1000)
  }

  recordTransfer (direction: 'upload' | 'download', bytes: number): void {
    this.transfers.inc({ direction })
    this.transferBytes.inc({ direction }, bytes)
  }

  private async storage (store: FileStore): Promise<{ files: number, bytes: number }> {
    // walking the store on every scrape would cost more than the information is worth
    if (this.storageCache === null || Date.now() - this.storageCache.at > STORAGE_CACHE_MS) {
      // a store that does not answer (S3 away) keeps the last figures: a scrape must not fail with it
      const value = await store.usage().catch(() => this.storageCache?.value ?? { files: 0, bytes: 0 })
      this.storageCache = { at: Date.now(), value }
    }
    return this.storageCache.value
  }
}

/** The cluster view (REDIS_URL), read when scraped; zeros for one process. */
function clusterGauges (registers: Registry[], view: () => { replicasAlive: number, redisReachable: boolean } | null): Gauge[] {
  return [
    new Gauge({ name: 'warden_cluster_replicas', help: 'Replicas alive in the shared Redis, this one included (0 for one process or while Redis does not answer)', registers, collect () { this.set(view()?.replicasAlive ?? 0) } }),
    new Gauge({ name: 'warden_cluster_redis_up', help: 'Whether this replica\'s last heartbeat reached Redis (0 for one process)', registers, collect () { this.set(view()?.redisReachable === true ? 1 : 0) } }),
  ]
}

/** Live workers by kind, read when scraped. */
function liveWorkersGauge (registers: Registry[], live: () => LiveStats | null): Gauge<'kind'> {
  return new Gauge({
    name: 'warden_live_workers',
    help: 'Live workers (Jupyter kernels, paused tool-calling runs) by kind',
    labelNames: ['kind'],
    registers,
    collect () {
      this.reset()
      for (const [kind, count] of Object.entries(live()?.byKind ?? {})) this.set({ kind }, count)
    },
  })
}

/** Tool-calling runs by state, read when scraped. */
function programmaticRunsGauge (registers: Registry[], stats: () => { running: number, paused: number }): Gauge<'state'> {
  return new Gauge({
    name: 'warden_ptc_runs',
    help: 'Programmatic tool-calling runs alive, by state (running, paused: waiting for tool results)',
    labelNames: ['state'],
    registers,
    collect () {
      const { running, paused } = stats()
      this.set({ state: 'running' }, running)
      this.set({ state: 'paused' }, paused)
    },
  })
}

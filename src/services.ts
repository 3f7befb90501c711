import path from 'node:path'
import type { Logger } from 'pino'
import type { Config } from './config.ts'
import { runSelfTest, type SelfTestReport } from './exec/self-test.ts'
import { chooseFlavor, loadStdlibModules, type FlavorOf } from './exec/flavor.ts'
import { Metrics } from './metrics.ts'
import { detectCgroups, instanceName, type Cgroups } from './jail/cgroup.ts'
import type { JailDriver } from './jail/jail-spec.ts'
import { prepareRuntimeDir, type RuntimeDir } from './jail/runtime-dir.ts'
import { findJailDrivers, startWithFirstWorkingDriver, type DriverStart } from './jail/select-driver.ts'
import { ColdWorkers } from './pool/cold-workers.ts'
import { PreparedWorkers } from './pool/prepared-workers.ts'
import { WorkerPool, type PoolStats, type WorkerProvider } from './pool/worker-pool.ts'
import { Zygote, channelDirFor } from './pool/zygote.ts'
import { ZygoteSet } from './pool/zygotes.ts'
import { MAX_JOB_MESSAGE_BYTES, MAX_WORKER_MESSAGE_BYTES } from './exec/job-budget.ts'
import { computeCapacity } from './capacity.ts'
import { checkLanguages, type LanguageAvailability } from './exec/languages/index.ts'
import { KernelManager } from './live/kernels.ts'
import { LiveWorkers, type LiveStats } from './live/registry.ts'
import type { FileStore } from './storage/file-store.ts'
import { openLocalFileStore } from './storage/local-file-store.ts'
import { openS3FileStore } from './storage/s3-file-store.ts'
import { startRetentionSweeper } from './storage/retention.ts'
import { WorkspaceStore, type Workspaces } from './storage/workspaces.ts'
import type { Redis } from 'ioredis'
import { connectRedis } from './cluster/redis.ts'
import { SharedWorkspaceStore } from './cluster/shared-workspaces.ts'
import { ReplicaRegistry, type ClusterView } from './cluster/replicas.ts'
import { LiveRoutes } from './cluster/live-routes.ts'
import { Forwarder, type ForwardStats } from './cluster/forwarder.ts'
import { advertisedUrl } from './cluster/advertise.ts'

const SANDBOX_SOURCE = path.resolve(import.meta.dirname, '..', 'sandbox')
/** a language's prepared workers go after this long without a request for it */
const PREPARED_IDLE_MS = 10 * 60_000
const VERSION = '0.1.0'

/** What /health reports, as the services know it; api/health.ts shapes it for the wire. */
export interface ServiceState {
  startedAt: number
  version: string
  driver: JailDriver
  cgroups: Cgroups | null
  pool: PoolStats
  live: LiveStats | null
  /** the replicas as this one sees them (REDIS_URL); absent or null for one process */
  cluster?: (ClusterView & ForwardStats & { liveRoutes: number }) | null
  languages: LanguageAvailability
  selfTest: SelfTestReport | null
  warnings: string[]
}

export interface Services {
  store: FileStore
  /** light workers for programs that need no data stack, when the light zygote is on */
  flavorOf: FlavorOf
  workspaces: Workspaces
  /** the replicas' shared Redis (REDIS_URL) and this replica's id in it; null for one process (the default) */
  cluster: { redis: Redis, prefix: string, replicaId: string } | null
  /** the routing table of the kernels and paused runs this replica holds (REDIS_URL); null for one process */
  routes: LiveRoutes | null
  /** sends requests for live things other replicas hold to them (REDIS_URL); null for one process */
  forwarder: Forwarder | null
  /** the server listens at `address`: advertise it (or CLUSTER_ADVERTISE_URL) to the other replicas */
  advertise: (address: string) => void
  /** draining is over: remove this replica's routes and leave the replicas' view */
  leaveCluster: () => Promise<void>
  pool: WorkerProvider
  /** kernels and paused runs; null in the benchmark's cold mode */
  live: LiveWorkers | null
  /** Jupyter kernels (live workers of kind kernel); null in the benchmark's cold mode */
  kernels: KernelManager | null
  driver: JailDriver
  /** drivers JAIL=auto tried before `driver`, each with why its jail did not start */
  driverFailures: string[]
  cgroups: Cgroups | null
  state: () => ServiceState
  languages: LanguageAvailability
  metrics: Metrics
  /** run the startup canaries once the server listens on `serverPort`; the verdict shows on /health */
  selfTest: (serverPort: number) => Promise<SelfTestReport>
  isReady: () => boolean
  close: () => Promise<void>
}

export class StartupError extends Error {
  override name = 'StartupError'
}

/** Build everything behind the HTTP layer: store, jail driver, cgroups, zygotes and the worker pool. */
export async function startServices (config: Config, log: Logger): Promise<Services> {
  const warnings: string[] = []
  const store = await openFileStore(config, log)
  const cluster = config.cluster === null ? null : { redis: await connectShared(config.cluster.redisUrl), prefix: config.cluster.prefix }
  const workspaces = cluster === null ? await WorkspaceStore.open(config.dataDir) : new SharedWorkspaceStore(cluster.redis, cluster.prefix)
  const replicas = cluster === null ? null : new ReplicaRegistry(cluster.redis, cluster.prefix)
  await replicas?.join()
  const routes = cluster === null || replicas === null ? null : new LiveRoutes(cluster.redis, cluster.prefix, replicas.replicaId)
  const drivers = await findJailDrivers(config.jail).catch((error: Error) => { throw new StartupError(error.message) })
  const detection = await detectCgroups({ instance: instanceName(), mode: config.jail.cgroups, pythonPath: config.jail.pythonPath })
  const cgroups = detection.ok ? detection.cgroups : null
  if (detection.ok) {
    warnings.push(...detection.warnings)
  } else if (config.jail.cgroups === 'off') {
    // the operator chose to run without limits: say so everywhere, refuse only under STRICT
    const message = 'cgroups are off (CGROUPS=off): executions run without memory, pids and CPU limits'
    if (config.jail.strict) throw new StartupError(`${message}; refused because STRICT=true`)
    warnings.push(message)
  } else {
    throw new StartupError(`cgroups are unavailable, so executions could not be limited: ${detection.reason}`)
  }
  for (const warning of warnings) log.warn(warning)
  const runtime = await prepareRuntimeDir(config.runDir, SANDBOX_SOURCE)

  const started = Date.now()
  let jailStart: DriverStart<{ pool: WorkerProvider, warm: WorkerPool | null, zygotes: ZygoteSet[] }>
  let metrics: Metrics | null = null
  try {
    jailStart = await startWithFirstWorkingDriver(drivers, (driver) => startPool(config, log, driver, cgroups, runtime, (ms) => metrics?.recordSpawn(ms)))
  } catch (error) {
    await runtime.remove()
    await cgroups?.close()
    throw new StartupError(`the jail did not start: ${(error as Error).message}`)
  }
  const { driver, started: { pool, warm, zygotes }, failures } = jailStart
  for (const failure of failures) {
    // JAIL=auto fell back to a driver the host allows: loud, and refused under STRICT
    const message = `${failure}; using ${driver.name} instead`
    log.warn(message)
    warnings.push(message)
  }
  if (failures.length > 0 && config.jail.strict) {
    await pool.close()
    await Promise.all(zygotes.map(async (set) => await set.close()))
    await runtime.remove()
    await cgroups?.close()
    throw new StartupError(`${failures.join('; ')}; refused because STRICT=true`)
  }
  log.info({ driver: driver.name, version: driver.version, cgroups: cgroups?.description ?? 'off' }, 'jail selected')
  const languages = checkLanguages()
  for (const { language, executables } of languages.missing) {
    log.warn({ language: language.id, missing: executables }, 'language not installed: its requests get 400 unsupported_language')
  }
  const capacity = computeCapacity(config)
  warnings.push(...capacity.warnings)
  // a live worker adopts a warm worker when one is ready (no fork on a kernel's first cell), else forks one
  const live = warm === null
    ? null
    : new LiveWorkers({ spawn: async (flavor) => await warm.adopt(flavor) ?? await warm.spawn(flavor) }, { ...config.live, max: capacity.liveMax }, log.child({ component: 'live' }))
  const kernels = live === null ? null : new KernelManager({ live, settings: config.jupyter, limits: config.limits, log: log.child({ component: 'kernels' }), ...(routes !== null && { routes }) })
  metrics = new Metrics(() => pool.stats(), store, () => live?.stats() ?? null)
  if (replicas !== null) metrics.watchCluster(() => replicas.view())
  const counted = metrics
  const forwarder = routes === null || config.cluster === null
    ? null
    : new Forwarder(routes, config.cluster.secret, { forwarded: (kind) => counted.recordForward(kind), missed: (kind) => counted.recordRoutingMiss(kind) }, log.child({ component: 'cluster' }))
  if (live !== null) live.onChange((event, worker) => metrics?.recordLive(event, worker.kind))
  let selfTest: SelfTestReport | null = null
  const sweeper = startRetentionSweeper(store, { ttlMs: config.storage.fileTtlMs, intervalMs: config.storage.sweepIntervalMs }, log)
  const workspaceSweeper = startRetentionSweeper(workspaces, { ttlMs: config.sessions.workspaceTtlMs, intervalMs: config.storage.sweepIntervalMs }, log)

  const stdlib = config.pool.lightZygote ? loadStdlibModules(config.jail.pythonPath) : new Set<string>()
  if (config.pool.lightZygote && stdlib.size === 0) log.warn({ python: config.jail.pythonPath }, 'the standard library\'s module names are unknown: Python runs on data workers only')
  const clusterState = () => replicas === null || routes === null || forwarder === null
    ? null
    : { ...replicas.view(), ...forwarder.stats(), liveRoutes: routes.held }
  return {
    store,
    flavorOf: (program, code) => chooseFlavor(program, code, stdlib),
    workspaces,
    cluster: cluster === null || replicas === null ? null : { ...cluster, replicaId: replicas.replicaId },
    routes,
    forwarder,
    advertise: (address) => { routes?.start(config.cluster?.advertiseUrl ?? advertisedUrl(address)) },
    leaveCluster: async () => {
      await routes?.clear()
      await replicas?.leave()
    },
    pool,
    live,
    kernels,
    driver,
    driverFailures: failures,
    cgroups,
    metrics,
    isReady: () => selfTest?.passed === true,
    selfTest: async (serverPort) => {
      selfTest = await runSelfTest(pool, config.limits, { cgroups: cgroups !== null, serverPort, flavors: config.pool.lightZygote && warm !== null ? ['data', 'light'] : ['data'] })
      return selfTest
    },
    languages,
    state: () => ({ startedAt: started, version: VERSION, driver, cgroups, pool: pool.stats(), live: live?.stats() ?? null, languages, selfTest, warnings, cluster: clusterState() }),
    close: async () => {
      await sweeper.stop()
      await workspaceSweeper.stop()
      kernels?.close()
      await live?.close()
      await pool.close()
      await Promise.all(zygotes.map(async (set) => await set.close()))
      await cgroups?.close()
      await runtime.remove()
      await routes?.clear()
      await replicas?.leave()
      cluster?.redis.disconnect()
    },
  }
}

/** STORAGE: local disk under DATA_DIR (the default), or an S3-compatible bucket every replica shares. */
async function openFileStore (config: Config, log: Logger): Promise<FileStore> {
  const s3 = config.storage.s3
  if (s3 === null) return await openLocalFileStore(config.dataDir, log)
  try {
    return await openS3FileStore(s3, log.child({ component: 'storage' }))
  } catch (error) {
    throw new StartupError(`the S3 bucket ${s3.bucket} cannot be reached (STORAGE=s3): ${(error as Error).message}`)
  }
}

async function connectShared (url: string): Promise<Redis> {
  try {
    return await connectRedis(url)
  } catch (error) {
    throw new StartupError(`Redis cannot be reached (REDIS_URL): ${(error as Error).message}`)
  }
}

async function startPool (config: Config, log: Logger, driver: JailDriver, cgroups: Cgroups | null, runtime: RuntimeDir, onSpawn: (ms: number) => void): Promise<{ pool: WorkerProvider, warm: WorkerPool | null, zygotes: ZygoteSet[] }> {
  if (config.pool.mode === 'cold') {
    // the benchmark's baseline: a fresh jail and interpreter per execution, nothing preloaded
    const cold = { ...config, jail: { ...config.jail, preloadModules: [] } }
    return { pool: new ColdWorkers((index) => startZygote(cold, log, driver, cgroups, runtime, index, 1), 10_000), warm: null, zygotes: [] }
  }
  const slotCount = computeCapacity(config).slotsPerZygote
  const count = config.pool.zygotes
  const zygotes = await ZygoteSet.start(count, (index) => startZygote(config, log, driver, cgroups, runtime, index, slotCount), log)
  // the light zygotes preload nothing; their indexes (uids, cgroups, channels) follow the data zygotes'
  const light = config.pool.lightZygote
    ? await ZygoteSet.start(count, (index) => startZygote({ ...config, jail: { ...config.jail, preloadModules: [] } }, log, driver, cgroups, runtime, count + index, slotCount), log)
      .catch(async (error: unknown) => { await zygotes.close(); throw error })
    : undefined
  const pool = new WorkerPool({ data: zygotes, ...(light === undefined ? {} : { light }) }, {
    min: config.pool.min,
    max: config.pool.max,
    acquireTimeoutMs: config.pool.queueTimeoutMs,
    maxQueue: config.pool.maxQueue,
    onSpawn,
    log,
  })
  const sets = light === undefined ? [zygotes] : [zygotes, light]
  if (config.pool.preparedMax === 0) return { pool, warm: pool, zygotes: sets }
  // interpreters (Node, TypeScript, R) started ahead for the languages in use (sandbox/prepared.py)
  const prepared = new PreparedWorkers(pool, { max: config.pool.preparedMax, idleMs: PREPARED_IDLE_MS, log: log.child({ component: 'prepared' }) })
  return { pool: prepared, warm: pool, zygotes: sets }
}

function startZygote (config: Config, log: Logger, driver: JailDriver, cgroups: Cgroups | null, runtime: RuntimeDir, index: number, slotCount: number): Promise<Zygote> {
  const limits = config.limits
  // ids: the zygote first, then one per slot; each zygote owns a disjoint range
  const zygoteUid = config.jail.uidBase + index * (slotCount + 1)
  return Zygote.start({
    index,
    driver,
    cgroups,
    sandboxDir: runtime.sandboxDir,
    etcDir: runtime.etcDir,
    channelDir: channelDirFor(runtime.root, index),
    pythonPath: config.jail.pythonPath,
    zygoteUid,
    slotUidBase: zygoteUid + 1,
    slotCount,
    workerLimits: { memoryBytes: limits.memoryBytes, pidsMax: limits.pidsMax, cpus: limits.cpus },
    messageBytes: { toWorker: MAX_JOB_MESSAGE_BYTES, fromWorker: MAX_WORKER_MESSAGE_BYTES },
    sandboxConfig: {
      preload: config.jail.preloadModules,
      workdir_bytes: limits.workdirBytes,
      tmp_bytes: limits.tmpBytes,
      shm_bytes: Math.min(limits.tmpBytes, 64 * 1024 * 1024),
      nofile: 1024,
      file_size_bytes: limits.maxFileBytes,
      nproc: limits.pidsMax,
      max_output_files: limits.maxOutputFiles,
      max_output_file_bytes: limits.maxOutputFileBytes,
      max_output_total_bytes: limits.maxOutputTotalBytes,
    },
    startTimeoutMs: 120_000,
    log: log.child({ zygote: `z${index}` }),
  })
}

import type { FastifyPluginAsync } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { ServiceState } from '../services.ts'

export const HealthReportSchema = z.object({
  status: z.enum(['ok', 'degraded', 'starting', 'unavailable']),
  version: z.string(),
  uptime_s: z.number(),
  jail: z.object({ driver: z.string(), version: z.string() }),
  cgroups: z.object({ active: z.boolean(), description: z.string() }),
  pool: z.object({
    warm: z.number(),
    busy: z.number(),
    starting: z.number(),
    waiting: z.number(),
    zygotes_alive: z.number(),
    zygotes: z.number(),
    spawned: z.number().describe('workers forked since start'),
    acquired_warm: z.number().describe('executions that found a warm worker'),
    acquired_cold: z.number().describe('executions that had to wait for a worker to be forked'),
    jails_started: z.number().describe('jails (zygotes) started since the server started, restarts included'),
    slots: z.record(z.string(), z.number()).describe('worker slots by state'),
    prepared: z.record(z.string(), z.number()).describe('workers whose interpreter was started ahead and waits for a program, by language'),
    prepared_hits: z.number().describe('executions of a language with a prepared interpreter (Node, TypeScript, R) that found one ready'),
    prepared_misses: z.number().describe('such executions that found none and started their interpreter themselves'),
  }),
  languages: z.object({
    available: z.array(z.object({ id: z.string(), lang: z.array(z.string()) })),
    missing: z.array(z.object({ id: z.string(), missing: z.array(z.string()), install: z.string() })).describe('known languages whose runtime this host lacks'),
  }),
  live: z.object({
    workers: z.number().describe('live workers now: Jupyter kernels and paused tool-calling runs'),
    max: z.number(),
    by_kind: z.record(z.string(), z.number()),
    created: z.number(),
    ended: z.record(z.string(), z.number()).describe('by reason: stopped, expired, died, shutdown'),
  }).nullable(),
  self_test: z.object({
    passed: z.boolean(),
    durationMs: z.number(),
    checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
  }).nullable().describe('the startup canaries run in real jails; null while they run'),
  cluster: z.object({
    replica_id: z.string(),
    replicas_alive: z.number().describe('replicas whose heartbeat reached the shared Redis in the last 3 s, this one included'),
    redis_reachable: z.boolean(),
  }).nullable().describe('null for one process (no REDIS_URL)'),
  warnings: z.array(z.string()),
})
export type HealthReport = z.infer<typeof HealthReportSchema>

/** The /health body from the services' state: the status is ok only when every part is. */
export function toHealthReport (state: ServiceState): HealthReport {
  const { pool, selfTest, warnings, live } = state
  const status = selfTest === null
    ? 'starting'
    : !selfTest.passed || pool.zygotesAlive === 0
        ? 'unavailable'
        : warnings.length > 0 || pool.zygotesAlive < pool.zygotes ? 'degraded' : 'ok'
  return {
    status,
    version: state.version,
    uptime_s: Math.round((Date.now() - state.startedAt) / 1000),
    jail: { driver: state.driver.name, version: state.driver.version },
    cgroups: { active: state.cgroups !== null, description: state.cgroups?.description ?? 'off' },
    pool: {
      warm: pool.warm,
      busy: pool.busy,
      starting: pool.starting,
      waiting: pool.waiting,
      zygotes_alive: pool.zygotesAlive,
      zygotes: pool.zygotes,
      spawned: pool.spawned,
      acquired_warm: pool.acquiredWarm,
      acquired_cold: pool.acquiredCold,
      jails_started: pool.jailsStarted,
      slots: pool.slots,
      prepared: pool.prepared ?? {},
      prepared_hits: pool.preparedHits ?? 0,
      prepared_misses: pool.preparedMisses ?? 0,
    },
    languages: {
      available: state.languages.available.map((language) => ({ id: language.id, lang: [...language.aliases] })),
      missing: state.languages.missing.map(({ language, executables }) => ({ id: language.id, missing: executables, install: language.install })),
    },
    live: live === null
      ? null
      : { workers: live.live, max: live.max, by_kind: live.byKind, created: live.created, ended: live.ended },
    self_test: selfTest,
    cluster: state.cluster === null || state.cluster === undefined
      ? null
      : { replica_id: state.cluster.replicaId, replicas_alive: state.cluster.replicasAlive, redis_reachable: state.cluster.redisReachable },
    warnings,
  }
}

export interface HealthDeps {
  state: () => ServiceState
  /** the startup self-test passed */
  isReady: () => boolean
  isDraining: () => boolean
}

const ProbeSchema = z.object({ status: z.enum(['ready', 'starting', 'draining', 'alive']) })

/** Cheap by design: no I/O, so it stays fast when every worker is busy. */
export const healthRoutes: FastifyPluginAsync<HealthDeps> = async (app, { state, isReady, isDraining }) => {
  // For orchestrators: ready only once the self-test passed and until a shutdown begins, so a load
  // balancer, Docker's healthcheck or a Kubernetes readiness probe never sends work that would get 503.
  app.withTypeProvider<ZodTypeProvider>().get('/health/ready', {
    schema: { summary: 'Readiness: 200 once the startup self-test passed, 503 before and while draining', response: { 200: ProbeSchema, 503: ProbeSchema } },
  }, async (_request, reply) => {
    if (isDraining()) return await reply.code(503).send({ status: 'draining' as const })
    if (!isReady()) return await reply.code(503).send({ status: 'starting' as const })
    return { status: 'ready' as const }
  })
  // Liveness: the process serves HTTP; a restart would not help anything else.
  app.withTypeProvider<ZodTypeProvider>().get('/health/live', {
    schema: { summary: 'Liveness: 200 while the process serves requests', response: { 200: ProbeSchema } },
  }, async () => ({ status: 'alive' as const }))

  app.withTypeProvider<ZodTypeProvider>().get('/health', {
    schema: { summary: 'Liveness, the active jail driver and pool state', response: { 200: HealthReportSchema, 503: HealthReportSchema } },
  }, async (_request, reply) => {
    const health = toHealthReport(state())
    return reply.code(health.status === 'unavailable' ? 503 : 200).send(health)
  })
}

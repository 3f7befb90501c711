import type { FastifyPluginAsync } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'

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
  }),
  self_test: z.object({
    passed: z.boolean(),
    durationMs: z.number(),
    checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
  }).nullable().describe('the startup canaries run in real jails; null while they run'),
  warnings: z.array(z.string()),
})
export type HealthReport = z.infer<typeof HealthReportSchema>

export interface HealthDeps { report: () => HealthReport }

/** Cheap by design: no I/O, so it stays fast when every worker is busy. */
export const healthRoutes: FastifyPluginAsync<HealthDeps> = async (app, { report }) => {
  app.withTypeProvider<ZodTypeProvider>().get('/health', {
    schema: { summary: 'Liveness, the active jail driver and pool state', response: { 200: HealthReportSchema, 503: HealthReportSchema } },
  }, async (_request, reply) => {
    const health = report()
    return reply.code(health.status === 'unavailable' ? 503 : 200).send(health)
  })
}

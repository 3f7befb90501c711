import type { FastifyPluginAsync } from 'fastify'
import { createApiKeyCheck } from '../auth/api-key.ts'
import { errors } from '../errors.ts'
import type { Metrics } from '../metrics.ts'

export interface MetricsDeps { metrics: Metrics, token: string | null }

/** Prometheus scrape endpoint; behind METRICS_TOKEN (as a bearer token) when one is set. */
export const metricsRoutes: FastifyPluginAsync<MetricsDeps> = async (app, { metrics, token }) => {
  const isValidToken = token === null ? null : createApiKeyCheck([token])
  app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: false } }, async (request, reply) => {
    if (isValidToken !== null) {
      const presented = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? '')?.[1]
      if (!isValidToken(presented)) throw errors.unauthorized('/metrics needs the METRICS_TOKEN as Authorization: Bearer.')
    }
    return await reply.type(metrics.registry.contentType).send(await metrics.registry.metrics())
  })
}

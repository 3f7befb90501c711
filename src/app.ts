import { createHash } from 'node:crypto'
import multipart from '@fastify/multipart'
import rateLimit from '@fastify/rate-limit'
import Fastify, { type FastifyRequest } from 'fastify'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import type { Logger } from 'pino'
import { closesConnection, drainUnreadBody } from './api/connection.ts'
import { execRoutes } from './api/exec.ts'
import { fileRoutes } from './api/files.ts'
import { healthRoutes } from './api/health.ts'
import { isJupyterPath, jupyterRoutes, webSockets } from './api/jupyter/routes.ts'
import { terminalRoutes } from './api/terminal/routes.ts'
import { Terminals } from './terminal/terminals.ts'
import { JupyterAuth } from './auth/jupyter-auth.ts'
import { metricsRoutes } from './api/metrics.ts'
import { programmaticRoutes } from './api/programmatic.ts'
import { registerOpenApi } from './api/openapi.ts'
import { uploadRoutes } from './api/upload.ts'
import { requestIdentity, userFromScope } from './api/identity.ts'
import { createAuthenticator, type Principal } from './auth/authenticate.ts'
import type { Config } from './config.ts'
import { renderError } from './api/error-boundary.ts'
import { errors } from './errors.ts'
import { UserConcurrency } from './exec/admission.ts'
import { SharedUserConcurrency } from './cluster/shared-concurrency.ts'
import type { Redis } from 'ioredis'
import { forwardedIdentity, verifyingRewrite } from './cluster/forwarded.ts'
import type { Forwarder } from './cluster/forwarder.ts'
import type { LiveRouteBook } from './live/kernels.ts'
import type { WorkerSource } from './exec/execute.ts'
import type { FlavorOf } from './exec/flavor.ts'
import type { LanguageAvailability } from './exec/languages/index.ts'
import type { KernelManager } from './live/kernels.ts'
import type { LiveWorkers } from './live/registry.ts'
import { CompileCache } from './exec/compile-cache.ts'
import type { Metrics } from './metrics.ts'
import { ProgrammaticRuns } from './ptc/programmatic-runs.ts'
import type { ServiceState } from './services.ts'
import type { FileStore } from './storage/file-store.ts'
import type { Workspaces } from './storage/workspaces.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** set by the authentication hook on every route but /health */
    principal: Principal | null
    /** the execution profile this request is served in (X-CodeAPI-Expected-Profile, spec §4.4) */
    executionProfile: 'default' | 'stateful'
    /** what a route adds to the request's one log line (an execution's id, outcome and phases) */
    logFields: Record<string, unknown> | null
  }
}

export interface AppServices {
  store: FileStore
  workers: WorkerSource
  /** which kind of worker a program gets; every program gets a data worker when absent */
  flavorOf?: FlavorOf
  /** kernels and paused runs; null where none can be made (the benchmark's cold mode, in-process tests) */
  live: LiveWorkers | null
  kernels: KernelManager | null
  workspaces: Workspaces
  /** the replicas' shared Redis (REDIS_URL) and this replica's id in it; absent or null for one process (the default) */
  cluster?: { redis: Redis, prefix: string, replicaId: string } | null
  /** sends requests for kernels and paused runs other replicas hold to them (REDIS_URL); absent for one process */
  forwarder?: Forwarder | null
  /** where this replica says which kernels and paused runs it holds (REDIS_URL) */
  routes?: LiveRouteBook | null
  state: () => ServiceState
  languages: LanguageAvailability
  metrics: Metrics
  /** false until the startup self-test passed: only /health answers before */
  isReady: () => boolean
  /** true once a shutdown began: new requests are refused while running ones finish */
  isDraining: () => boolean
  log: Logger
}

/** Everything is served at the root and under /v1, the base LibreChat is usually given (spec §0). */
const PREFIXES = ['', '/v1']
/** Routes outside API authentication: /metrics has its own optional token, /docs describes the API. */
const PUBLIC_PATHS = new Set(PREFIXES.flatMap((prefix) => ['/health', '/health/ready', '/health/live', '/metrics'].map((path) => `${prefix}${path}`)))
const isPublic = (path: string) => PUBLIC_PATHS.has(path) || path === '/docs' || path.startsWith('/docs/')
const REQUEST_TIMEOUT_MS = 300_000

export async function buildApp (config: Config, services: AppServices) {
  const app = Fastify({
    loggerInstance: services.log,
    bodyLimit: config.maxBodyBytes,
    // a client has this long to send a whole request (a 150 MiB upload included): slow bodies end
    requestTimeout: REQUEST_TIMEOUT_MS,
    return503OnClosing: true,
    // one line per request (below) instead of Fastify's two, each with the whole request serialized:
    // at LOG_LEVEL=info that was a fifth of the server's CPU per execution
    disableRequestLogging: true,
    // replicas (REDIS_URL): a forward signed with CLUSTER_SECRET is served for the identity it carries
    ...(config.cluster !== null && { rewriteUrl: verifyingRewrite(config.cluster.secret) }),
  })
  app.decorateRequest('logFields', null)
  app.addHook('onResponse', async (request, reply) => {
    request.log.info({ method: request.method, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10, ...request.logFields }, 'request completed')
  })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  // before any route plugin: plugins capture the handlers present when they register
  app.setNotFoundHandler(async (request, reply) => {
    await reply.code(404).send({ error: errors.notFound.code, message: `No route for ${request.method} ${routePath(request)}.` })
  })
  app.setErrorHandler(async (error, request, reply) => await renderError(error, request, reply, services.isDraining()))
  await app.register(multipart, { limits: { fileSize: config.storage.maxUploadBytes } })
  await registerOpenApi(app)

  // Fastify parses text/plain by default; /exec wants JSON and should say so with a 415
  app.removeContentTypeParser('text/plain')
  // first, so that every answer carries it, a 401 included (spec §4.4); while shutting down, every
  // answer also closes its connection, so keep-alive clients do not hold the server past its last run,
  // and so does every answer to LibreChat's axios calls (api/connection.ts)
  app.decorateRequest('executionProfile', 'default')
  app.addHook('onRequest', async (request, reply) => {
    const served = config.sessions.profiles
    reply.header('x-codeapi-execution-profile', served.includes('default') ? 'default' : served[0])
    request.executionProfile = servedProfile(request.headers['x-codeapi-expected-profile'], served)
    reply.header('x-codeapi-execution-profile', request.executionProfile)
  })
  const drainMaxBytes = Math.max(config.maxBodyBytes, config.storage.maxUploadBytes)
  app.addHook('onSend', async (request, reply) => {
    if (services.isDraining() || closesConnection(request)) reply.header('connection', 'close')
    else if (reply.getHeader('connection') === 'close' && drainUnreadBody(request, drainMaxBytes)) reply.removeHeader('connection')
  })
  const authenticateHeaders = await createAuthenticator(config.auth)
  const authenticate = config.cluster === null
    ? (request: FastifyRequest) => authenticateHeaders(request.headers)
    : async (request: FastifyRequest): Promise<Principal> => {
      const identity = forwardedIdentity(request.raw)
      return identity === null ? await authenticateHeaders(request.headers) : { method: 'forwarded', identity }
    }
  app.decorateRequest('principal', null)
  const basePath = config.jupyter.basePath ?? ''
  // the Jupyter API authenticates its own way (tokens in URLs, password logins): see api/jupyter/routes.ts
  // so does the terminal API, with Open WebUI's bearer key (api/terminal/routes.ts)
  const terminalPath = config.terminal.basePath
  const isTerminalPath = (path: string) => config.terminal.enabled && services.live !== null && (path === terminalPath || path.startsWith(`${terminalPath}/`))
  const ownAuthentication = (request: FastifyRequest) => isPublic(routePath(request)) || isJupyterPath(routePath(request), basePath) || isTerminalPath(routePath(request))
  app.addHook('onRequest', async (request) => {
    if (ownAuthentication(request)) return
    request.principal = await authenticate(request)
  })
  app.addHook('onRequest', async (request) => {
    if (isPublic(routePath(request))) return
    // a draining replica still serves what other replicas forward to it: the runs and kernels it holds
    if (services.isDraining() && forwardedIdentity(request.raw) === null) throw errors.shuttingDown('Warden is shutting down; retry on another instance or in a moment.')
    if (!services.isReady()) throw errors.jailUnavailable('Warden is starting: its self-test has not passed yet; see /health.')
  })
  if (config.admission.rateLimitPerMinute > 0) {
    await app.register(rateLimit, {
      // after the body is parsed: LibreChat's agents name the user only in the body (`user_id`)
      hook: 'preHandler',
      max: config.admission.rateLimitPerMinute,
      timeWindow: 60_000,
      // replicas count together in their shared Redis; while it is away the per-minute count is not kept
      // (an execution still needs Redis for its concurrency count, and gets 503 cluster_unavailable)
      ...(services.cluster != null && { redis: services.cluster.redis, nameSpace: `${services.cluster.prefix}rate:`, skipOnError: true }),
      // a forward was counted by the replica the client reached
      allowList: config.cluster === null ? ownAuthentication : (request) => ownAuthentication(request) || forwardedIdentity(request.raw) !== null,
      keyGenerator: (request) => rateLimitKey(request),
      errorResponseBuilder: (_request, context) => errors.rateLimited(
        `More than ${context.max} requests in a minute. Retry after ${Math.ceil(context.ttl / 1000)} s.`,
        { retry_after_seconds: Math.ceil(context.ttl / 1000) }),
    })
  }

  const compileCache = new CompileCache(config.compile.cacheBytes)
  services.metrics.watchCompileCache(() => compileCache.stats())
  const exec = {
    compileCache,
    store: services.store,
    workers: services.workers,
    flavorOf: services.flavorOf,
    limits: config.limits,
    admission: services.cluster == null
      ? new UserConcurrency(config.admission.maxConcurrentPerUser)
      // a lease outlives the longest execution and its output collection
      : new SharedUserConcurrency(services.cluster.redis, services.cluster.prefix, config.admission.maxConcurrentPerUser, config.limits.timeoutMs + 60_000, services.cluster.replicaId),
    metrics: services.metrics,
    logCode: config.logCode,
    languages: services.languages,
    workspaces: services.workspaces,
    sessions: config.sessions,
    onBackgroundError: (error: unknown) => services.log.warn({ err: error }, 'a session record was not written'),
  }
  // tool-calling runs need live workers: where there are none (cold mode), the route is absent
  const programmatic = services.live === null
    ? null
    : new ProgrammaticRuns({
      live: services.live,
      exec,
      settings: config.programmatic,
      observer: {
        round: (calls) => services.metrics.recordProgrammaticRound(calls),
        ended: (reason) => services.metrics.recordProgrammaticEnd(reason),
      },
      log: services.log.child({ component: 'ptc' }),
      ...(services.routes != null && { routes: services.routes }),
    })
  if (programmatic !== null) {
    services.metrics.watchProgrammatic(() => programmatic.stats())
    app.addHook('onClose', async () => programmatic.close())
  }
  await app.register(...webSockets)
  if (services.live !== null && config.terminal.enabled) {
    const terminals = new Terminals(services.live, config.terminal, {
      store: services.store, workspaces: services.workspaces, sessions: config.sessions, limits: config.limits, log: services.log.child({ component: 'terminal' }),
    }, services.log.child({ component: 'terminal' }))
    app.addHook('onClose', async () => await terminals.close())
    await app.register(terminalRoutes, { prefix: terminalPath, terminals, settings: config.terminal, auth: config.auth, limits: config.limits, maxUploadBytes: config.storage.maxUploadBytes })
  }
  if (services.kernels !== null) {
    await app.register(jupyterRoutes, { kernels: services.kernels, auth: new JupyterAuth(config.auth, config.jupyter), metrics: services.metrics, basePath, forwarder: services.forwarder ?? null })
  }
  for (const prefix of PREFIXES) {
    await app.register(execRoutes, { prefix, ...exec })
    if (programmatic !== null) await app.register(programmaticRoutes, { prefix, ...exec, runs: programmatic, forwarder: services.forwarder ?? null })
    await app.register(uploadRoutes, { prefix, store: services.store, maxUploadBytes: config.storage.maxUploadBytes, metrics: services.metrics })
    await app.register(fileRoutes, { prefix, store: services.store, metrics: services.metrics })
    await app.register(healthRoutes, { prefix, state: services.state, isReady: services.isReady, isDraining: services.isDraining })
    await app.register(metricsRoutes, { prefix, metrics: services.metrics, token: config.metricsToken })
  }

  return app
}

/** Per user where the request names one (JWT, User-Id), else per API key, else per client address. */
function rateLimitKey (request: FastifyRequest): string {
  const identity = request.principal?.identity
  if (identity != null) return `user:${identity.tenant}:${identity.user ?? ''}`
  const named = requestIdentity(request, (request.body as { user_id?: unknown } | undefined)?.user_id,
    userFromScope(request.query as { kind?: string, id?: string }))
  if (named.user !== null) return `user:${named.tenant}:${named.user}`
  const key = request.headers['x-api-key']
  if (typeof key === 'string') return `key:${createHash('sha256').update(key).digest('hex').slice(0, 16)}`
  return `ip:${request.ip}`
}

function routePath (request: FastifyRequest): string {
  return request.url.split('?')[0] ?? request.url
}

type Profile = 'default' | 'stateful'

/**
 * Current LibreChat asserts the profile it expects on every call (spec §4.4); Warden serves the profiles
 * PROFILES names (both by default, on the same base URL). Returns the profile this request is served in.
 */
function servedProfile (header: string | string[] | undefined, served: readonly Profile[]): Profile {
  const fallback = served.includes('default') ? 'default' : served[0] ?? 'default'
  if (header === undefined) return fallback
  const expected = Array.isArray(header) ? undefined : header.trim().toLowerCase()
  if (expected !== 'default' && expected !== 'stateful') {
    throw errors.invalidExecutionProfile('X-CodeAPI-Expected-Profile must be "default" or "stateful".')
  }
  if (!served.includes(expected)) {
    throw errors.executionProfileMismatch(`Expected the ${expected} execution profile, but reached ${fallback}.`, {
      expected_profile: expected,
      actual_profile: fallback,
    })
  }
  return expected
}

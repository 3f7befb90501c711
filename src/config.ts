import { readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { z } from 'zod'

/** "24h", "90m", "3600s", "2d" or a bare number of seconds, to milliseconds. */
const duration = z
  .string()
  .trim()
  .regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)?$/, 'expected a duration such as 24h, 90m, 3600s or 2d')
  .transform((text) => {
    const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(text)
    const value = Number(match?.[1])
    const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match?.[2] ?? 's'] ?? 1000
    return Math.round(value * unitMs)
  })
  .refine((ms) => ms > 0, 'must be longer than 0')

export const AUTH_METHODS = ['api-key', 'jwt', 'none'] as const
export type AuthMethod = (typeof AUTH_METHODS)[number]

/** warm workers kept ready unless POOL_MIN says otherwise (never more than POOL_MAX) */
const DEFAULT_POOL_MIN = 4

/**
 * A decimal number within bounds. Unlike z.coerce.number(), an empty string (`PORT=` in a .env file)
 * is an error rather than 0.
 */
const decimal = (bounds: { min: number, max?: number, whole?: boolean }) => z.string().trim()
  .regex(bounds.whole === false ? /^\d+(\.\d+)?$/ : /^\d+$/, bounds.whole === false ? 'expected a number' : 'expected a whole number')
  .transform(Number)
  .pipe(z.number().min(bounds.min).max(bounds.max ?? Number.MAX_SAFE_INTEGER))
const positiveInt = (max?: number) => decimal({ min: 1, max })
const megabytes = (fallback: number) => positiveInt(1024 * 1024).default(fallback).transform((mb) => mb * 1024 * 1024)
const flag = (fallback: boolean) => z.stringbool().default(fallback)

/** One setting: the environment variable it is read from and its schema (with its default). */
type Setting = readonly [env: string, schema: z.ZodType]
type Settings = Record<string, Setting>
/** A slice of the configuration as the code sees it: camelCase keys, parsed values. */
type SliceOf<S extends Settings> = { [K in keyof S]: z.output<S[K][1]> }

/**
 * A slice of related settings: each key names its environment variable and schema once, and the slice's
 * type follows from them. Adding a setting is one line in one slice (plus its row in the README).
 */
function slice<S extends Settings> (settings: S) {
  return {
    settings,
    read: (env: Record<string, unknown>): SliceOf<S> =>
      Object.fromEntries(Object.entries(settings).map(([key, [name]]) => [key, env[name]])) as SliceOf<S>,
  }
}

const server = slice({
  host: ['HOST', z.string().min(1).default('127.0.0.1')],
  port: ['PORT', decimal({ min: 0, max: 65_535 }).default(8000)],
  dataDir: ['DATA_DIR', z.string().min(1).default('./data')],
  runDir: ['RUN_DIR', z.string().min(1).optional()],
  logLevel: ['LOG_LEVEL', z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')],
  shutdownTimeoutMs: ['SHUTDOWN_TIMEOUT_MS', positiveInt(3_600_000).optional()],
  maxBodyBytes: ['MAX_BODY_MB', megabytes(16)],
  metricsToken: ['METRICS_TOKEN', z.string().min(1).optional()],
  logCode: ['LOG_CODE', flag(false)],
})

const authSettings = slice({
  methods: ['AUTH', z.string().optional().transform((list, ctx) => {
    if (list === undefined) return undefined
    const methods = list.split(',').map((method) => method.trim()).filter(Boolean)
    const unknown = methods.filter((method) => !AUTH_METHODS.includes(method as AuthMethod))
    if (unknown.length > 0 || methods.length === 0) {
      ctx.addIssue({ code: 'custom', message: `expected a comma-separated list of ${AUTH_METHODS.join(', ')}` })
      return z.NEVER
    }
    return methods as AuthMethod[]
  })],
  apiKey: ['CODE_API_KEY', z.string().optional()],
  apiKeyFile: ['CODE_API_KEY_FILE', z.string().optional()],
  jwtPublicKeys: ['JWT_PUBLIC_KEYS', z.string().optional()],
  jwtJwksUrl: ['JWT_JWKS_URL', z.url({ protocol: /^https?$/ }).optional()],
  jwtIssuer: ['JWT_ISSUER', z.string().min(1).default('librechat')],
  jwtAudience: ['JWT_AUDIENCE', z.string().min(1).default('codeapi')],
  jwtMaxLifetimeS: ['JWT_MAX_LIFETIME_S', positiveInt(86_400).default(300)],
  jwtClockSkewS: ['JWT_CLOCK_SKEW_S', decimal({ min: 0, max: 600 }).default(30)],
  allowUnauthenticatedRemote: ['ALLOW_UNAUTHENTICATED_REMOTE', flag(false)],
})

const jail = slice({
  driver: ['JAIL', z.enum(['auto', 'nsjail', 'bwrap']).default('auto')],
  nsjailPath: ['NSJAIL_PATH', z.string().default('nsjail')],
  bwrapPath: ['BWRAP_PATH', z.string().default('bwrap')],
  nsjailConfig: ['NSJAIL_CONFIG', z.string().optional()],
  pythonPath: ['PYTHON_PATH', z.string().default('/usr/bin/python3')],
  preloadModules: ['PRELOAD_MODULES', z.string().default('numpy,pandas,matplotlib').transform((list) =>
    list.split(',').map((name) => name.trim()).filter(Boolean))],
  uidBase: ['JAIL_UID_BASE', decimal({ min: 1000, max: 4_000_000_000 }).default(2_000_000_000)],
  cgroups: ['CGROUPS', z.enum(['auto', 'off']).default('auto')],
  strict: ['STRICT', flag(false)],
})

const limits = slice({
  timeoutMs: ['EXEC_TIMEOUT_MS', positiveInt(3_600_000).default(30_000)],
  compileTimeoutMs: ['COMPILE_TIMEOUT_MS', positiveInt(3_600_000).default(15_000)],
  memoryBytes: ['MEMORY_LIMIT_MB', megabytes(512)],
  pidsMax: ['PIDS_LIMIT', decimal({ min: 8, max: 65_536 }).default(128)],
  cpus: ['CPU_LIMIT', decimal({ min: 0.01, max: 256, whole: false }).default(1)],
  maxStdoutBytes: ['MAX_STDOUT_BYTES', positiveInt().default(1024 * 1024)],
  maxStderrBytes: ['MAX_STDERR_BYTES', positiveInt().default(1024 * 1024)],
  workdirBytes: ['WORKDIR_LIMIT_MB', megabytes(256)],
  tmpBytes: ['TMP_LIMIT_MB', megabytes(64)],
  maxFileBytes: ['MAX_FILE_SIZE_MB', megabytes(128)],
  maxOutputFiles: ['MAX_OUTPUT_FILES', positiveInt(10_000).default(50)],
  maxOutputFileBytes: ['MAX_OUTPUT_FILE_MB', megabytes(128)],
  maxOutputTotalBytes: ['MAX_OUTPUT_TOTAL_MB', megabytes(256)],
})

const pool = slice({
  min: ['POOL_MIN', decimal({ min: 0, max: 256 }).optional()],
  max: ['POOL_MAX', positiveInt(256).default(8)],
  zygotes: ['ZYGOTES', positiveInt(16).default(1)],
  lightZygote: ['LIGHT_ZYGOTE', flag(true)],
  mode: ['POOL_MODE', z.enum(['warm', 'cold']).default('warm')],
  maxQueue: ['MAX_QUEUE', decimal({ min: 0, max: 100_000 }).default(64)],
  queueTimeoutMs: ['QUEUE_TIMEOUT_MS', positiveInt(3_600_000).default(30_000)],
  preparedMax: ['PREPARED_MAX', decimal({ min: 0, max: 256 }).default(4)],
})

const live = slice({
  max: ['MAX_LIVE_WORKERS', decimal({ min: 0, max: 1024 }).default(32)],
  idleTimeoutMs: ['LIVE_IDLE_TIMEOUT', duration.default(10 * 60_000)],
})

const jupyter = slice({
  token: ['JUPYTER_TOKEN', z.string().regex(/^[A-Za-z0-9_-]{16,}$/, 'use 16 or more of A-Z a-z 0-9 _ - (Open WebUI puts it in a URL unencoded)').optional()],
  password: ['JUPYTER_PASSWORD', z.string().min(8).optional()],
  basePath: ['JUPYTER_BASE_PATH', z.string().regex(/^(\/[A-Za-z0-9._~-]+)+$/, 'expected a path such as /jupyter').optional()],
  maxKernels: ['MAX_KERNELS', decimal({ min: 0, max: 1024 }).default(16)],
  maxKernelsPerUser: ['MAX_KERNELS_PER_USER', decimal({ min: 0, max: 1024 }).default(8)],
  kernelIdleTimeoutMs: ['KERNEL_IDLE_TIMEOUT_S', positiveInt(7 * 86_400).default(1800).transform((seconds) => seconds * 1000)],
})

const terminal = slice({
  enabled: ['TERMINAL', flag(true)],
  basePath: ['TERMINAL_BASE_PATH', z.string().regex(/^(\/[A-Za-z0-9._~-]+)+$/, 'expected a path such as /terminal').default('/terminal')],
  perChat: ['TERMINAL_PER_CHAT', flag(false)],
  max: ['MAX_TERMINALS', decimal({ min: 0, max: 1024 }).default(16)],
  maxPerUser: ['MAX_TERMINALS_PER_USER', decimal({ min: 0, max: 1024 }).default(4)],
  maxPtysPerTerminal: ['TERMINAL_MAX_SHELLS', positiveInt(64).default(4)],
  idleTimeoutMs: ['TERMINAL_IDLE_TIMEOUT', duration.default(30 * 60_000)],
  commandTimeoutMs: ['TERMINAL_COMMAND_TIMEOUT', duration.default(5 * 60_000)],
  maxCommandTimeoutMs: ['TERMINAL_MAX_COMMAND_TIMEOUT', duration.default(3_600_000)],
  defaultWaitMs: ['TERMINAL_DEFAULT_WAIT', duration.default(10_000)],
})

const programmatic = slice({
  maxPausedRuns: ['MAX_PAUSED_RUNS', decimal({ min: 0, max: 1024 }).default(16)],
  maxPausedRunsPerUser: ['MAX_PAUSED_RUNS_PER_USER', decimal({ min: 0, max: 1024 }).default(4)],
  pauseTimeoutMs: ['PTC_PAUSE_TIMEOUT', duration.default(5 * 60_000)],
  maxRounds: ['PTC_MAX_ROUNDS', positiveInt(1000).default(20)],
})

const sessions = slice({
  profiles: ['PROFILES', z.string().default('default,stateful').transform((list, ctx) => {
    const profiles = list.split(',').map((profile) => profile.trim()).filter(Boolean)
    if (profiles.length === 0 || profiles.some((profile) => profile !== 'default' && profile !== 'stateful')) {
      ctx.addIssue({ code: 'custom', message: 'expected default, stateful, or both, comma-separated' })
      return z.NEVER
    }
    return profiles as Array<'default' | 'stateful'>
  })],
  workspaceTtlMs: ['WORKSPACE_TTL', duration.optional()],
  workspaceMaxFiles: ['WORKSPACE_MAX_FILES', positiveInt(100_000).default(1000)],
  workspaceQuotaBytes: ['WORKSPACE_QUOTA_MB', positiveInt(1024 * 1024).transform((mb) => mb * 1024 * 1024).optional()],
  maxWorkspacesPerUser: ['MAX_WORKSPACES_PER_USER', positiveInt(10_000).default(10)],
  sessionMaxFiles: ['SESSION_MAX_FILES', positiveInt(100_000).default(10)],
})

const admission = slice({
  maxConcurrentPerUser: ['MAX_CONCURRENT_PER_USER', decimal({ min: 0, max: 10_000 }).default(4)],
  rateLimitPerMinute: ['RATE_LIMIT_PER_MINUTE', decimal({ min: 0, max: 1_000_000 }).default(0)],
})

const storage = slice({
  backend: ['STORAGE', z.enum(['local', 's3']).default('local')],
  maxUploadBytes: ['MAX_UPLOAD_MB', megabytes(150)],
  fileTtlMs: ['FILE_TTL', duration.default(24 * 3_600_000)],
  sweepIntervalMs: ['SWEEP_INTERVAL', duration.default(10 * 60_000)],
})

const compile = slice({
  cacheBytes: ['COMPILE_CACHE_MB', decimal({ min: 0, max: 1024 * 1024 }).default(128).transform((mb) => mb * 1024 * 1024)],
})

/** An S3-compatible bucket for stored files (STORAGE=s3); credentials fall back to the SDK's own chain (an IAM role). */
const s3 = slice({
  endpoint: ['S3_ENDPOINT', z.url({ protocol: /^https?$/ }).optional()],
  region: ['S3_REGION', z.string().min(1).default('us-east-1')],
  bucket: ['S3_BUCKET', z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'expected an S3 bucket name (3-63 of a-z 0-9 . -)').optional()],
  accessKeyId: ['S3_ACCESS_KEY_ID', z.string().min(1).optional()],
  secretAccessKey: ['S3_SECRET_ACCESS_KEY', z.string().min(1).optional()],
  forcePathStyle: ['S3_FORCE_PATH_STYLE', flag(false)],
  prefix: ['S3_PREFIX', z.string().regex(/^([A-Za-z0-9._-]+\/)*$/, 'expected a key prefix ending in / (warden/), or empty').default('warden/')],
})

/** Several replicas sharing one Redis (REDIS_URL): README "Scaling out". */
const cluster = slice({
  redisUrl: ['REDIS_URL', z.url({ protocol: /^rediss?$/ }).optional()],
  redisPrefix: ['REDIS_PREFIX', z.string().regex(/^[A-Za-z0-9._:-]*$/, 'expected letters, digits and . _ : -').default('warden:')],
})

const SLICES = [server, authSettings, jail, limits, pool, live, jupyter, terminal, programmatic, sessions, admission, storage, s3, cluster, compile] as const

/**
 * Every setting Warden reads, with its default: the union of the slices. The only place that reads
 * process.env; README's configuration table is kept in step with it by test/unit/readme.test.ts.
 */
export const EnvSchema = z.object(Object.fromEntries(SLICES.flatMap((part) => Object.values(part.settings))))

export type AuthSettings = SliceOf<typeof authSettings.settings>
/** What every execution gets unless a request asks for less time. */
export type ExecutionLimits = SliceOf<typeof limits.settings>
export type LiveSettings = SliceOf<typeof live.settings>
export type JupyterSettings = SliceOf<typeof jupyter.settings>
/** Open WebUI's Open Terminal path: one terminal jail per user (live workers of kind terminal). */
export type TerminalSettings = SliceOf<typeof terminal.settings>
/** Programmatic tool calling: paused runs (live workers of kind ptc) and their rounds. */
export type ProgrammaticToolSettings = SliceOf<typeof programmatic.settings>
/** Workspaces of runtime sessions and of continued execution sessions; the quota defaults to /mnt/data's size. */
export type SessionSettings = Omit<SliceOf<typeof sessions.settings>, 'workspaceQuotaBytes' | 'workspaceTtlMs'> & { workspaceQuotaBytes: number, workspaceTtlMs: number }

export interface AuthConfig {
  methods: AuthMethod[]
  apiKeys: string[]
  /** LibreChat's per-user tokens (spec §2.2); null when JWT is not enabled */
  jwt: {
    /** PEM text, a PEM file, or a directory of PEM files; resolved by src/auth/librechat-jwt.ts */
    publicKeys: string | null
    jwksUrl: string | null
    issuer: string
    audience: string
    maxLifetimeS: number
    clockSkewS: number
  } | null
}

/** The configuration: the slices as read, and the few values derived from several settings. */
export type Config = ReturnType<typeof buildConfig>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const repoRoot = path.resolve(import.meta.dirname, '..')

/** Parse and validate the environment once; a bad value stops the server with the variable's name. */
export function loadConfig (env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const parsed = EnvSchema.safeParse(env)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`)
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`)
  }
  return Object.freeze(buildConfig(parsed.data))
}

function buildConfig (e: Record<string, unknown>) {
  const base = server.read(e)
  const poolSettings = pool.read(e)
  const limitSettings = limits.read(e)
  const jailSettings = jail.read(e)
  const poolMin = poolSettings.min ?? Math.min(DEFAULT_POOL_MIN, poolSettings.max)
  if (poolMin > poolSettings.max) throw new ConfigError(`invalid configuration:\n  POOL_MIN: must not exceed POOL_MAX (${poolSettings.max})`)
  return {
    host: base.host,
    port: base.port,
    dataDir: path.resolve(base.dataDir),
    runDir: path.resolve(base.runDir ?? path.join(os.tmpdir(), `warden-${process.pid}`)),
    logLevel: base.logLevel,
    auth: resolveAuth(authSettings.read(e), base.host),
    jail: { ...jailSettings, nsjailConfig: path.resolve(jailSettings.nsjailConfig ?? path.join(repoRoot, 'nsjail.cfg')) },
    limits: limitSettings,
    pool: { ...poolSettings, min: poolMin },
    live: live.read(e),
    jupyter: jupyter.read(e),
    terminal: terminal.read(e),
    programmatic: programmatic.read(e),
    sessions: readSessions(e, limitSettings.workdirBytes, storage.read(e).fileTtlMs),
    admission: admission.read(e),
    // long enough for a running execution to finish by default
    shutdownTimeoutMs: base.shutdownTimeoutMs ?? limitSettings.timeoutMs + 10_000,
    storage: readStorage(e),
    /** null: one process, shared state in its memory and DATA_DIR (the default); else the replicas' Redis */
    cluster: readCluster(e, storage.read(e).backend),
    /** builds of compiled programs kept per owner, in the server's memory (0: none) */
    compile: compile.read(e),
    maxBodyBytes: base.maxBodyBytes,
    /** bearer token /metrics requires; null: /metrics is open like /health */
    metricsToken: base.metricsToken ?? null,
    /** log submitted code at debug level (only with LOG_LEVEL=debug) */
    logCode: base.logCode,
  }
}

export type S3Config = NonNullable<ReturnType<typeof readStorage>['s3']>

function readStorage (e: Record<string, unknown>) {
  const settings = storage.read(e)
  if (settings.backend === 'local') return { ...settings, s3: null }
  const bucket = s3.read(e)
  if (bucket.bucket === undefined) throw new ConfigError('invalid configuration:\n  S3_BUCKET: STORAGE=s3 needs the bucket\'s name')
  if ((bucket.accessKeyId === undefined) !== (bucket.secretAccessKey === undefined)) {
    throw new ConfigError('invalid configuration:\n  S3_ACCESS_KEY_ID: set it together with S3_SECRET_ACCESS_KEY, or neither (the SDK\'s own credentials)')
  }
  return { ...settings, s3: { ...bucket, bucket: bucket.bucket } }
}

export type ClusterConfig = NonNullable<ReturnType<typeof readCluster>>

function readCluster (e: Record<string, unknown>, backend: 'local' | 's3') {
  const settings = cluster.read(e)
  if (settings.redisUrl === undefined) return null
  if (backend !== 's3') {
    throw new ConfigError('invalid configuration:\n  STORAGE: replicas sharing REDIS_URL must share their files too: set STORAGE=s3 (a local disk is one replica\'s)')
  }
  return { redisUrl: settings.redisUrl, prefix: settings.redisPrefix }
}

function readSessions (e: Record<string, unknown>, workdirBytes: number, fileTtlMs: number): SessionSettings {
  const settings = sessions.read(e)
  // a workspace holds stored files: it cannot outlive them
  if (settings.workspaceTtlMs !== undefined && settings.workspaceTtlMs > fileTtlMs) {
    throw new ConfigError('invalid configuration:\n  WORKSPACE_TTL: must not be longer than FILE_TTL, or a workspace would outlive its files')
  }
  return { ...settings, workspaceTtlMs: settings.workspaceTtlMs ?? fileTtlMs, workspaceQuotaBytes: Math.min(settings.workspaceQuotaBytes ?? workdirBytes, workdirBytes) }
}

function resolveAuth (a: AuthSettings, host: string): AuthConfig {
  const apiKeys = [...splitKeys(a.apiKey ?? ''), ...(a.apiKeyFile === undefined ? [] : readKeyFile(a.apiKeyFile))]
  const hasJwt = a.jwtPublicKeys !== undefined || a.jwtJwksUrl !== undefined
  const methods = a.methods ?? [...(apiKeys.length > 0 ? ['api-key' as const] : []), ...(hasJwt ? ['jwt' as const] : [])]
  if (methods.length === 0) {
    throw new ConfigError('invalid configuration:\n  CODE_API_KEY: no API key is set; set CODE_API_KEY (or JWT_PUBLIC_KEYS for ' +
      'LibreChat\'s JWTs), or AUTH=none to serve without authentication')
  }
  if (methods.includes('api-key') && apiKeys.length === 0) {
    throw new ConfigError('invalid configuration:\n  CODE_API_KEY: AUTH includes api-key but no key is set; set CODE_API_KEY ' +
      '(or CODE_API_KEY_FILE), or AUTH=none to serve without authentication')
  }
  if (methods.includes('jwt') && !hasJwt) {
    throw new ConfigError('invalid configuration:\n  JWT_PUBLIC_KEYS: AUTH includes jwt but neither JWT_PUBLIC_KEYS nor JWT_JWKS_URL is set')
  }
  if (methods.includes('none') && !isLoopback(host) && !a.allowUnauthenticatedRemote) {
    throw new ConfigError(`invalid configuration:\n  AUTH: none serves only on a loopback address, not HOST=${host}; ` +
      'set ALLOW_UNAUTHENTICATED_REMOTE=true to serve anyone who can reach it')
  }
  return {
    methods,
    apiKeys,
    jwt: methods.includes('jwt')
      ? {
          publicKeys: a.jwtPublicKeys ?? null,
          jwksUrl: a.jwtJwksUrl ?? null,
          issuer: a.jwtIssuer,
          audience: a.jwtAudience,
          maxLifetimeS: a.jwtMaxLifetimeS,
          clockSkewS: a.jwtClockSkewS,
        }
      : null,
  }
}

function splitKeys (text: string): string[] {
  return text.split(/[,\n]/).map((key) => key.trim()).filter(Boolean)
}

function readKeyFile (file: string): string[] {
  try {
    return splitKeys(readFileSync(file, 'utf8'))
  } catch (error) {
    throw new ConfigError(`invalid configuration:\n  CODE_API_KEY_FILE: cannot read ${file}: ${(error as Error).message}`)
  }
}

function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

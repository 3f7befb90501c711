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

/**
 * Every setting Warden reads, with its default. The only place that reads process.env; README's
 * configuration table is kept in step with it by test/unit/readme.test.ts.
 */
export const EnvSchema = z.object({
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: decimal({ min: 0, max: 65_535 }).default(8000),
  DATA_DIR: z.string().min(1).default('./data'),
  RUN_DIR: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),

  AUTH: z.string().optional().transform((list, ctx) => {
    if (list === undefined) return undefined
    const methods = list.split(',').map((method) => method.trim()).filter(Boolean)
    const unknown = methods.filter((method) => !AUTH_METHODS.includes(method as AuthMethod))
    if (unknown.length > 0 || methods.length === 0) {
      ctx.addIssue({ code: 'custom', message: `expected a comma-separated list of ${AUTH_METHODS.join(', ')}` })
      return z.NEVER
    }
    return methods as AuthMethod[]
  }),
  CODE_API_KEY: z.string().optional(),
  CODE_API_KEY_FILE: z.string().optional(),
  JWT_PUBLIC_KEYS: z.string().optional(),
  JWT_JWKS_URL: z.url({ protocol: /^https?$/ }).optional(),
  JWT_ISSUER: z.string().min(1).default('librechat'),
  JWT_AUDIENCE: z.string().min(1).default('codeapi'),
  JWT_MAX_LIFETIME_S: positiveInt(86_400).default(300),
  JWT_CLOCK_SKEW_S: decimal({ min: 0, max: 600 }).default(30),
  ALLOW_UNAUTHENTICATED_REMOTE: flag(false),
  METRICS_TOKEN: z.string().min(1).optional(),
  LOG_CODE: flag(false),

  JAIL: z.enum(['auto', 'nsjail', 'bwrap']).default('auto'),
  NSJAIL_PATH: z.string().default('nsjail'),
  BWRAP_PATH: z.string().default('bwrap'),
  NSJAIL_CONFIG: z.string().optional(),
  PYTHON_PATH: z.string().default('/usr/bin/python3'),
  PRELOAD_MODULES: z.string().default('numpy,pandas,matplotlib').transform((list) =>
    list.split(',').map((name) => name.trim()).filter(Boolean)),
  JAIL_UID_BASE: decimal({ min: 1000, max: 4_000_000_000 }).default(2_000_000_000),
  CGROUPS: z.enum(['auto', 'off']).default('auto'),
  STRICT: flag(false),

  EXEC_TIMEOUT_MS: positiveInt(3_600_000).default(30_000),
  MEMORY_LIMIT_MB: megabytes(512),
  PIDS_LIMIT: decimal({ min: 8, max: 65_536 }).default(128),
  CPU_LIMIT: decimal({ min: 0.01, max: 256, whole: false }).default(1),
  MAX_STDOUT_BYTES: positiveInt().default(1024 * 1024),
  MAX_STDERR_BYTES: positiveInt().default(1024 * 1024),
  WORKDIR_LIMIT_MB: megabytes(256),
  TMP_LIMIT_MB: megabytes(64),
  MAX_FILE_SIZE_MB: megabytes(128),
  MAX_OUTPUT_FILES: positiveInt(10_000).default(50),
  MAX_OUTPUT_FILE_MB: megabytes(128),
  MAX_OUTPUT_TOTAL_MB: megabytes(256),

  POOL_MIN: decimal({ min: 0, max: 256 }).optional(),
  POOL_MAX: positiveInt(256).default(8),
  ZYGOTES: positiveInt(16).default(1),
  POOL_MODE: z.enum(['warm', 'cold']).default('warm'),
  MAX_QUEUE: decimal({ min: 0, max: 100_000 }).default(64),
  QUEUE_TIMEOUT_MS: positiveInt(3_600_000).default(30_000),
  MAX_CONCURRENT_PER_USER: decimal({ min: 0, max: 10_000 }).default(4),
  RATE_LIMIT_PER_MINUTE: decimal({ min: 0, max: 1_000_000 }).default(0),
  SHUTDOWN_TIMEOUT_MS: positiveInt(3_600_000).optional(),

  MAX_UPLOAD_MB: megabytes(150),
  MAX_BODY_MB: megabytes(16),
  FILE_TTL: duration.default(24 * 3_600_000),
  SWEEP_INTERVAL: duration.default(10 * 60_000),
})

type Env = z.infer<typeof EnvSchema>

export interface Config {
  host: string
  port: number
  dataDir: string
  runDir: string
  logLevel: Env['LOG_LEVEL']
  auth: AuthConfig
  jail: {
    driver: Env['JAIL']
    nsjailPath: string
    bwrapPath: string
    nsjailConfig: string
    pythonPath: string
    preloadModules: string[]
    uidBase: number
    cgroups: Env['CGROUPS']
    strict: boolean
  }
  limits: ExecutionLimits
  pool: { min: number, max: number, zygotes: number, mode: Env['POOL_MODE'], maxQueue: number, queueTimeoutMs: number }
  admission: { maxConcurrentPerUser: number, rateLimitPerMinute: number }
  shutdownTimeoutMs: number
  storage: { maxUploadBytes: number, fileTtlMs: number, sweepIntervalMs: number }
  maxBodyBytes: number
  /** bearer token /metrics requires; null: /metrics is open like /health */
  metricsToken: string | null
  /** log submitted code at debug level (only with LOG_LEVEL=debug) */
  logCode: boolean
}

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

/** What every execution gets unless a request asks for less time. */
export interface ExecutionLimits {
  timeoutMs: number
  memoryBytes: number
  pidsMax: number
  cpus: number
  maxStdoutBytes: number
  maxStderrBytes: number
  workdirBytes: number
  tmpBytes: number
  maxFileBytes: number
  maxOutputFiles: number
  maxOutputFileBytes: number
  maxOutputTotalBytes: number
}

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
  const e = parsed.data
  const poolMin = e.POOL_MIN ?? Math.min(DEFAULT_POOL_MIN, e.POOL_MAX)
  if (poolMin > e.POOL_MAX) throw new ConfigError(`invalid configuration:\n  POOL_MIN: must not exceed POOL_MAX (${e.POOL_MAX})`)
  return Object.freeze({
    host: e.HOST,
    port: e.PORT,
    dataDir: path.resolve(e.DATA_DIR),
    runDir: path.resolve(e.RUN_DIR ?? path.join(os.tmpdir(), `warden-${process.pid}`)),
    logLevel: e.LOG_LEVEL,
    auth: resolveAuth(e),
    jail: {
      driver: e.JAIL,
      nsjailPath: e.NSJAIL_PATH,
      bwrapPath: e.BWRAP_PATH,
      nsjailConfig: path.resolve(e.NSJAIL_CONFIG ?? path.join(repoRoot, 'nsjail.cfg')),
      pythonPath: e.PYTHON_PATH,
      preloadModules: e.PRELOAD_MODULES,
      uidBase: e.JAIL_UID_BASE,
      cgroups: e.CGROUPS,
      strict: e.STRICT,
    },
    limits: {
      timeoutMs: e.EXEC_TIMEOUT_MS,
      memoryBytes: e.MEMORY_LIMIT_MB,
      pidsMax: e.PIDS_LIMIT,
      cpus: e.CPU_LIMIT,
      maxStdoutBytes: e.MAX_STDOUT_BYTES,
      maxStderrBytes: e.MAX_STDERR_BYTES,
      workdirBytes: e.WORKDIR_LIMIT_MB,
      tmpBytes: e.TMP_LIMIT_MB,
      maxFileBytes: e.MAX_FILE_SIZE_MB,
      maxOutputFiles: e.MAX_OUTPUT_FILES,
      maxOutputFileBytes: e.MAX_OUTPUT_FILE_MB,
      maxOutputTotalBytes: e.MAX_OUTPUT_TOTAL_MB,
    },
    pool: { min: poolMin, max: e.POOL_MAX, zygotes: e.ZYGOTES, mode: e.POOL_MODE, maxQueue: e.MAX_QUEUE, queueTimeoutMs: e.QUEUE_TIMEOUT_MS },
    admission: { maxConcurrentPerUser: e.MAX_CONCURRENT_PER_USER, rateLimitPerMinute: e.RATE_LIMIT_PER_MINUTE },
    // long enough for a running execution to finish by default
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS ?? e.EXEC_TIMEOUT_MS + 10_000,
    storage: { maxUploadBytes: e.MAX_UPLOAD_MB, fileTtlMs: e.FILE_TTL, sweepIntervalMs: e.SWEEP_INTERVAL },
    maxBodyBytes: e.MAX_BODY_MB,
    metricsToken: e.METRICS_TOKEN ?? null,
    logCode: e.LOG_CODE,
  })
}

function resolveAuth (e: Env): AuthConfig {
  const apiKeys = [...splitKeys(e.CODE_API_KEY ?? ''), ...(e.CODE_API_KEY_FILE === undefined ? [] : readKeyFile(e.CODE_API_KEY_FILE))]
  const hasJwt = e.JWT_PUBLIC_KEYS !== undefined || e.JWT_JWKS_URL !== undefined
  const methods = e.AUTH ?? [...(apiKeys.length > 0 ? ['api-key' as const] : []), ...(hasJwt ? ['jwt' as const] : [])]
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
  if (methods.includes('none') && !isLoopback(e.HOST) && !e.ALLOW_UNAUTHENTICATED_REMOTE) {
    throw new ConfigError(`invalid configuration:\n  AUTH: none serves only on a loopback address, not HOST=${e.HOST}; ` +
      'set ALLOW_UNAUTHENTICATED_REMOTE=true to serve anyone who can reach it')
  }
  return {
    methods,
    apiKeys,
    jwt: methods.includes('jwt')
      ? {
          publicKeys: e.JWT_PUBLIC_KEYS ?? null,
          jwksUrl: e.JWT_JWKS_URL ?? null,
          issuer: e.JWT_ISSUER,
          audience: e.JWT_AUDIENCE,
          maxLifetimeS: e.JWT_MAX_LIFETIME_S,
          clockSkewS: e.JWT_CLOCK_SKEW_S,
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

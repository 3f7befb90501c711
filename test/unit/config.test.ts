import assert from 'node:assert/strict'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { ConfigError, loadConfig } from '../../src/config.ts'

const MiB = 1024 * 1024
const repoRoot = path.resolve(import.meta.dirname, '..', '..')

/** The smallest environment that loads: authentication is the one setting without a default. */
function load (env: Record<string, string> = {}) {
  return loadConfig({ AUTH: 'none', ...env })
}

/** Assert that `env` is refused with a ConfigError whose message has a line for `variable`. */
function assertRejected (env: Record<string, string>, variable: string): void {
  assert.throws(() => load(env), (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`)
    assert.equal(error.name, 'ConfigError')
    assert.match(error.message, new RegExp(`^ {2}${variable}: \\S`, 'm'), `message does not name ${variable}:\n${error.message}`)
    return true
  }, `${JSON.stringify(env)} was accepted`)
}

test('an environment with only AUTH=none loads every documented default', () => {
  const config = load()
  assert.equal(config.host, '127.0.0.1')
  assert.equal(config.port, 8000)
  assert.equal(config.dataDir, path.resolve('./data'))
  assert.equal(config.runDir, path.resolve(os.tmpdir(), `warden-${process.pid}`))
  assert.equal(config.logLevel, 'info')
  assert.deepEqual(config.auth, { methods: ['none'], apiKeys: [], jwt: null })
  assert.deepEqual(config.jail, {
    driver: 'auto',
    nsjailPath: 'nsjail',
    bwrapPath: 'bwrap',
    nsjailConfig: path.join(repoRoot, 'nsjail.cfg'),
    pythonPath: '/usr/bin/python3',
    preloadModules: ['numpy', 'pandas', 'matplotlib'],
    uidBase: 2_000_000_000,
    cgroups: 'auto',
    strict: false,
  })
  assert.deepEqual(config.limits, {
    timeoutMs: 30_000,
    compileTimeoutMs: 15_000,
    memoryBytes: 512 * MiB,
    pidsMax: 128,
    cpus: 1,
    maxStdoutBytes: MiB,
    maxStderrBytes: MiB,
    workdirBytes: 256 * MiB,
    tmpBytes: 64 * MiB,
    maxFileBytes: 128 * MiB,
    maxOutputFiles: 50,
    maxOutputFileBytes: 128 * MiB,
    maxOutputTotalBytes: 256 * MiB,
  })
  assert.equal(config.pool.min, 4)
  assert.equal(config.pool.max, 8)
  assert.equal(config.pool.zygotes, 1)
  assert.equal(config.pool.mode, 'warm')
  assert.deepEqual(config.storage, { backend: 'local', maxUploadBytes: 150 * MiB, fileTtlMs: 24 * 3_600_000, sweepIntervalMs: 10 * 60_000, s3: null })
  assert.equal(config.cluster, null, 'one process, nothing shared: the default')
  assert.equal(config.maxBodyBytes, 16 * MiB)
})

test('the loaded config is frozen', () => {
  const config = load()
  assert.ok(Object.isFrozen(config))
  assert.throws(() => { (config as { port: number }).port = 1 }, TypeError)
})

test('explicit values reach their config fields', () => {
  const config = load({
    HOST: '0.0.0.0',
    ALLOW_UNAUTHENTICATED_REMOTE: 'true',
    PORT: '0',
    DATA_DIR: '/srv/warden',
    RUN_DIR: 'run',
    LOG_LEVEL: 'debug',
    JAIL: 'bwrap',
    NSJAIL_PATH: '/opt/nsjail',
    BWRAP_PATH: '/opt/bwrap',
    NSJAIL_CONFIG: 'custom.cfg',
    PYTHON_PATH: '/opt/python',
    PRELOAD_MODULES: ' numpy , ,scipy,',
    JAIL_UID_BASE: '100000',
    CGROUPS: 'off',
    STRICT: 'true',
    EXEC_TIMEOUT_MS: '5000',
    PIDS_LIMIT: '8',
    CPU_LIMIT: '0.5',
    MAX_STDOUT_BYTES: '4096',
    MAX_STDERR_BYTES: '2048',
    MAX_OUTPUT_FILES: '10000',
    POOL_MIN: '0',
    POOL_MAX: '256',
    ZYGOTES: '16',
    LIGHT_ZYGOTE: 'false',
    POOL_MODE: 'cold',
    MAX_PAUSED_RUNS: '3',
    MAX_PAUSED_RUNS_PER_USER: '2',
    PTC_PAUSE_TIMEOUT: '90s',
    PTC_MAX_ROUNDS: '50',
    PREPARED_MAX: '0',
  })
  assert.equal(config.host, '0.0.0.0')
  assert.equal(config.port, 0)
  assert.equal(config.dataDir, '/srv/warden')
  assert.equal(config.runDir, path.resolve('run'))
  assert.equal(config.logLevel, 'debug')
  assert.deepEqual(config.jail, {
    driver: 'bwrap',
    nsjailPath: '/opt/nsjail',
    bwrapPath: '/opt/bwrap',
    nsjailConfig: path.resolve('custom.cfg'),
    pythonPath: '/opt/python',
    preloadModules: ['numpy', 'scipy'],
    uidBase: 100_000,
    cgroups: 'off',
    strict: true,
  })
  assert.equal(config.limits.timeoutMs, 5000)
  assert.equal(config.limits.pidsMax, 8)
  assert.equal(config.limits.cpus, 0.5)
  assert.equal(config.limits.maxStdoutBytes, 4096)
  assert.equal(config.limits.maxStderrBytes, 2048)
  assert.equal(config.limits.maxOutputFiles, 10_000)
  assert.deepEqual(config.pool, { min: 0, max: 256, zygotes: 16, lightZygote: false, mode: 'cold', maxQueue: 64, queueTimeoutMs: 30_000, preparedMax: 0 })
  assert.deepEqual(config.programmatic, { maxPausedRuns: 3, maxPausedRunsPerUser: 2, pauseTimeoutMs: 90_000, maxRounds: 50 })
})

test('an empty PRELOAD_MODULES preloads nothing', () => {
  assert.deepEqual(load({ PRELOAD_MODULES: '' }).jail.preloadModules, [])
})

test('STRICT reads the usual spellings of true and false', () => {
  for (const value of ['true', '1', 'yes', 'on']) assert.equal(load({ STRICT: value }).jail.strict, true, value)
  for (const value of ['false', '0', 'no', 'off']) assert.equal(load({ STRICT: value }).jail.strict, false, value)
})

test('every *_MB variable is converted to bytes in its config field', () => {
  const fields: Array<[string, (config: ReturnType<typeof load>) => number]> = [
    ['MEMORY_LIMIT_MB', (c) => c.limits.memoryBytes],
    ['WORKDIR_LIMIT_MB', (c) => c.limits.workdirBytes],
    ['TMP_LIMIT_MB', (c) => c.limits.tmpBytes],
    ['MAX_FILE_SIZE_MB', (c) => c.limits.maxFileBytes],
    ['MAX_OUTPUT_FILE_MB', (c) => c.limits.maxOutputFileBytes],
    ['MAX_OUTPUT_TOTAL_MB', (c) => c.limits.maxOutputTotalBytes],
    ['MAX_UPLOAD_MB', (c) => c.storage.maxUploadBytes],
    ['MAX_BODY_MB', (c) => c.maxBodyBytes],
  ]
  for (const [variable, field] of fields) {
    assert.equal(field(load({ [variable]: '1' })), MiB, `${variable}=1`)
    assert.equal(field(load({ [variable]: '3' })), 3 * MiB, `${variable}=3`)
  }
})

test('FILE_TTL and SWEEP_INTERVAL read h, m, s, ms, d and bare seconds as milliseconds', () => {
  const cases: Array<[string, number]> = [
    ['24h', 24 * 3_600_000],
    ['90m', 90 * 60_000],
    ['3600s', 3_600_000],
    ['2d', 2 * 86_400_000],
    ['3600', 3_600_000],
    ['1.5h', 5_400_000],
    ['250ms', 250],
    [' 24h ', 24 * 3_600_000],
    ['10 m', 600_000],
  ]
  for (const [text, ms] of cases) {
    assert.equal(load({ FILE_TTL: text }).storage.fileTtlMs, ms, `FILE_TTL=${JSON.stringify(text)}`)
    assert.equal(load({ SWEEP_INTERVAL: text }).storage.sweepIntervalMs, ms, `SWEEP_INTERVAL=${JSON.stringify(text)}`)
  }
})

test('a malformed duration is refused naming its variable', () => {
  for (const text of ['', 'forever', '24x', '-1h', '1e3', 'h', '24H', '1h30m', '.5h']) {
    assertRejected({ FILE_TTL: text }, 'FILE_TTL')
    assertRejected({ SWEEP_INTERVAL: text }, 'SWEEP_INTERVAL')
  }
})

// The retention sweeper throws a RangeError naming `ttlMs`/`intervalMs` for 0, after config accepted it.
test('a zero FILE_TTL or SWEEP_INTERVAL is refused by config, naming the variable', () => {
  for (const text of ['0', '0s', '0h', '0.0001s']) {
    assertRejected({ FILE_TTL: text }, 'FILE_TTL')
    assertRejected({ SWEEP_INTERVAL: text }, 'SWEEP_INTERVAL')
  }
})

test('every numeric and enum variable refuses a bad value with a message naming it', () => {
  const bad: Record<string, string[]> = {
    HOST: [''],
    DATA_DIR: [''],
    RUN_DIR: [''],
    PORT: ['-1', '65536', '80.5', 'http'],
    LOG_LEVEL: ['verbose', 'INFO'],
    AUTH: ['basic', 'None'],
    JAIL: ['docker', 'nsjail '],
    JAIL_UID_BASE: ['999', '4000000001', '1000.5', 'x'],
    CGROUPS: ['on', 'v2'],
    STRICT: ['maybe', '2'],
    EXEC_TIMEOUT_MS: ['0', '-1', '3600001', '1.5', 'ten'],
    MEMORY_LIMIT_MB: ['0', '-512', '1.5', 'lots'],
    PIDS_LIMIT: ['7', '65537', '64.5'],
    CPU_LIMIT: ['0', '-1', '257', 'all'],
    MAX_STDOUT_BYTES: ['0', '-1', '1.5'],
    MAX_STDERR_BYTES: ['0', '-1', '1.5'],
    WORKDIR_LIMIT_MB: ['0', 'x'],
    TMP_LIMIT_MB: ['0', 'x'],
    MAX_FILE_SIZE_MB: ['0', 'x'],
    MAX_OUTPUT_FILES: ['0', '10001'],
    MAX_OUTPUT_FILE_MB: ['0', 'x'],
    MAX_OUTPUT_TOTAL_MB: ['0', 'x'],
    POOL_MIN: ['-1', '257', '1.5'],
    POOL_MAX: ['0', '257', 'x'],
    ZYGOTES: ['0', '17', 'x'],
    POOL_MODE: ['hot', 'Warm'],
    MAX_UPLOAD_MB: ['0', 'x'],
    MAX_BODY_MB: ['0', 'x'],
  }
  for (const [variable, values] of Object.entries(bad)) {
    for (const value of values) assertRejected({ [variable]: value }, variable)
  }
})

test('several bad values are all named in one error', () => {
  assert.throws(() => load({ PORT: 'x', LOG_LEVEL: 'loud', ZYGOTES: '0' }), (error: unknown) => {
    assert.ok(error instanceof ConfigError)
    for (const variable of ['PORT', 'LOG_LEVEL', 'ZYGOTES']) assert.match(error.message, new RegExp(`^ {2}${variable}: `, 'm'))
    return true
  })
})

// An unset-but-present variable (`PORT=` in a compose file) must not silently become port 0, a random port.
test('an empty PORT is refused or falls back to 8000, never read as port 0', () => {
  let port: number | null = null
  try {
    port = load({ PORT: '' }).port
  } catch (error) {
    assert.ok(error instanceof ConfigError)
    assert.match(error.message, /^ {2}PORT: /m)
    return
  }
  assert.equal(port, 8000)
})

test('POOL_MIN above POOL_MAX is refused naming POOL_MIN', () => {
  assertRejected({ POOL_MIN: '5', POOL_MAX: '4' }, 'POOL_MIN')
  const pool = load({ POOL_MIN: '4', POOL_MAX: '4' }).pool
  assert.equal(pool.min, 4)
  assert.equal(pool.max, 4)
})

test('without CODE_API_KEY and without AUTH=none the config is refused naming CODE_API_KEY', () => {
  for (const env of [{}, { AUTH: 'api-key' }, { CODE_API_KEY: '' }, { CODE_API_KEY: ' , ,' }, { AUTH: 'api-key', CODE_API_KEY: ' ' }]) {
    assert.throws(() => loadConfig(env), (error: unknown) => {
      assert.ok(error instanceof ConfigError, `${JSON.stringify(env)}: ${String(error)}`)
      assert.match(error.message, /^ {2}CODE_API_KEY: .*AUTH=none/m)
      return true
    }, JSON.stringify(env))
  }
})

test('AUTH=none serves without a key, even when one is set', () => {
  assert.deepEqual(loadConfig({ AUTH: 'none' }).auth.methods, ['none'])
  assert.deepEqual(loadConfig({ AUTH: 'none', CODE_API_KEY: 'secret' }).auth.methods, ['none'])
})

test('CODE_API_KEY alone selects api-key auth; a comma-separated list gives several trimmed keys', () => {
  assert.deepEqual(loadConfig({ CODE_API_KEY: 'secret' }).auth, { methods: ['api-key'], apiKeys: ['secret'], jwt: null })
  assert.deepEqual(loadConfig({ CODE_API_KEY: ' one, two ,,three ' }).auth.apiKeys, ['one', 'two', 'three'])
  assert.deepEqual(loadConfig({ AUTH: 'api-key', CODE_API_KEY: 'k1,k2' }).auth, { methods: ['api-key'], apiKeys: ['k1', 'k2'], jwt: null })
})

test('JWT settings select jwt auth with LibreChat\'s defaults; AUTH combines methods', () => {
  const pem = '-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----'
  assert.deepEqual(loadConfig({ JWT_PUBLIC_KEYS: pem }).auth, {
    methods: ['jwt'],
    apiKeys: [],
    jwt: { publicKeys: pem, jwksUrl: null, issuer: 'librechat', audience: 'codeapi', maxLifetimeS: 300, clockSkewS: 30 },
  })
  assert.deepEqual(loadConfig({ AUTH: 'api-key,jwt', CODE_API_KEY: 'k', JWT_PUBLIC_KEYS: pem }).auth.methods, ['api-key', 'jwt'])
  assert.throws(() => loadConfig({ AUTH: 'jwt' }), /JWT_PUBLIC_KEYS: AUTH includes jwt/)
  assert.throws(() => loadConfig({ AUTH: 'api-key,magic', CODE_API_KEY: 'k' }), /AUTH: expected a comma-separated list/)
})

test('AUTH=none on a non-loopback address is refused unless ALLOW_UNAUTHENTICATED_REMOTE=true', () => {
  assert.throws(() => loadConfig({ AUTH: 'none', HOST: '0.0.0.0' }), /AUTH: none serves only on a loopback address/)
  assert.deepEqual(loadConfig({ AUTH: 'none', HOST: '0.0.0.0', ALLOW_UNAUTHENTICATED_REMOTE: 'true' }).auth.methods, ['none'])
  assert.deepEqual(loadConfig({ AUTH: 'none', HOST: '::1' }).auth.methods, ['none'])
})

test('STORAGE=s3 needs a bucket and both keys or neither; REDIS_URL needs STORAGE=s3', () => {
  assertRejected({ STORAGE: 's3' }, 'S3_BUCKET')
  assertRejected({ STORAGE: 's3', S3_BUCKET: 'files', S3_ACCESS_KEY_ID: 'key' }, 'S3_ACCESS_KEY_ID')
  assertRejected({ STORAGE: 's3', S3_BUCKET: 'Not_A_Bucket' }, 'S3_BUCKET')
  assertRejected({ REDIS_URL: 'redis://127.0.0.1:6379' }, 'STORAGE')
  assertRejected({ STORAGE: 's3', S3_BUCKET: 'files', REDIS_URL: 'http://127.0.0.1:6379' }, 'REDIS_URL')
  const config = load({ STORAGE: 's3', S3_BUCKET: 'files', S3_ENDPOINT: 'http://127.0.0.1:9000', S3_FORCE_PATH_STYLE: 'true', REDIS_URL: 'redis://127.0.0.1:6379/2' })
  assert.deepEqual(config.storage.s3, { endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'files', accessKeyId: undefined, secretAccessKey: undefined, forcePathStyle: true, prefix: 'warden/' })
  assert.deepEqual(config.cluster, { redisUrl: 'redis://127.0.0.1:6379/2', prefix: 'warden:' })
})

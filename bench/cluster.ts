import { randomBytes } from 'node:crypto'
import os from 'node:os'
import type { Server } from 'node:http'
import { Redis } from 'ioredis'
import { Pool } from 'undici'
import { startRedis } from '../test/helpers/redis.ts'
import { proxyUrl, startRoundRobinProxy } from '../test/helpers/round-robin-proxy.ts'
import { s3Env, startS3 } from '../test/helpers/s3.ts'
import { connectRedis } from '../src/cluster/redis.ts'
import { SharedUserConcurrency } from '../src/cluster/shared-concurrency.ts'
import { UserConcurrency, type Admission } from '../src/exec/admission.ts'
import { launchServer, type BenchServer } from './launch.ts'
import { percentile } from './measure.ts'

/**
 * The cluster rows (BENCH_SCENARIOS=cluster; README "Scaling out"): one Redis, one s3rver bucket and three
 * replicas on this machine, all of them sharing its cores, so the rows show what the shared state and the
 * proxy cost, not how far replicas scale. Measured:
 * - exec/s, p50 and p99 of `print(1)` at c=16 through the round-robin proxy of the cluster test with 1, 2
 *   and 3 replicas behind it, beside one process with the embedded defaults (STORAGE=local, no Redis) and
 *   one replica reached directly, so the proxy's hop and the shared state are told apart;
 * - a forward: GET api/kernels/<id> answered by the kernel's replica against the same request sent to
 *   another replica, which forwards it, alternating at c=1;
 * - the Redis round trips of an execution: c=1 p50 of a replica (REDIS_URL, STORAGE=s3) against the
 *   embedded process, one execution on each in turn; the admission step alone; and the commands Redis
 *   receives per execution (MONITOR, the heartbeat left out).
 * Every execution names its user (`user_id`, as LibreChat does), 16 users, so the per-user concurrency
 * count, which lives in Redis on replicas, is on every execution's path.
 */

export interface ClusterRow {
  target: string
  /** replicas behind the proxy; null for a server reached directly */
  replicas: number | null
  concurrency: number
  executions: number
  perSecond: number
  p50: number
  p99: number
  errors: number
  firstError: string | null
}

export interface ForwardCost { requests: number, ownerP50: number, ownerP99: number, forwardedP50: number, forwardedP99: number, addedP50: number }

export interface RedisCost {
  executions: number
  embeddedP50: number
  sharedP50: number
  addedP50: number
  /** one Redis round trip (PING from the bench at c=1), p50 */
  roundTripP50: number
  /** the per-user admission step alone, in this process: counted in memory (one process) and in Redis (replicas), p50 */
  admissionLocalP50: number
  admissionSharedP50: number
  /** commands replicas sent to Redis per execution (each one round trip, or one pipeline entry), by name */
  roundTripsPerExecution: number
  sentPerExecution: Record<string, number>
  /** commands Redis ran inside those scripts per execution, by name */
  scriptedPerExecution: Record<string, number>
}

export interface ClusterResult { rows: ClusterRow[], forward: ForwardCost, redis: RedisCost, load: string, poolSize: number }

const CONCURRENCY = 16
const USERS = 16
const FORWARD_PAIRS = 500
const MONITORED_EXECUTIONS = 200
const WARM_UP_EXECUTIONS = 20
/** at least this many executions on each side, however slow the machine is */
const MIN_PAIRS = 100
const PREFIX = 'bench:'

interface Options { durationMs: number, jail: string, log: (line: string) => void }

export async function measureCluster (options: Options): Promise<ClusterResult> {
  const cleanups: Array<() => Promise<void>> = []
  const hooks = { after: (fn: () => Promise<void>) => { cleanups.push(fn) } }
  const load = `load average ${os.loadavg().map((value) => value.toFixed(2)).join(', ')} at the start`
  const poolSize = Number(process.env.POOL_MAX ?? 8)
  const began = performance.now()
  const since = () => `${((performance.now() - began) / 1000).toFixed(0)} s`
  try {
    const redis = await startRedis(hooks)
    const s3 = await startS3(hooks)
    const apiKey = `bench-${randomBytes(12).toString('hex')}`
    const pool = { JAIL: options.jail, POOL_MIN: String(poolSize), POOL_MAX: String(poolSize), CODE_API_KEY: apiKey }
    const shared = { ...pool, ...s3Env(s3), REDIS_URL: redis.url, REDIS_PREFIX: PREFIX, CLUSTER_SECRET: randomBytes(32).toString('hex') }
    const started = async (server: Promise<BenchServer>) => {
      const running = await server
      cleanups.push(async () => await running.stop())
      return running
    }
    // each replica its own outside uids, as each would have on a host of its own
    const replicas = await Promise.all([0, 1, 2].map(async (index) => await started(launchServer({ ...shared, JAIL_UID_BASE: String(2_100_000_000 + index * 10_000_000) }))))
    const embedded = await started(launchServer(pool))
    options.log(`cluster: Redis ${redis.url}, s3rver ${s3.endpoint}, replicas ${replicas.map((replica) => replica.url).join(' ')}, one process ${embedded.url}, started in ${since()}`)

    // first, while both sides are as freshly warmed: with it last, the one process had sat idle through
    // the other rows and was the slower side in 5 of 6 runs on this loaded VM; first, it was faster in the next
    const costs = await measureRedisCost(embedded.url, replicas[0]!.url, apiKey, redis.url, options.durationMs)
    options.log(`cluster Redis: embedded p50 ${costs.embeddedP50.toFixed(2)} ms, replica p50 ${costs.sharedP50.toFixed(2)} ms, ${costs.roundTripsPerExecution.toFixed(2)} commands sent per execution`)
    const rows: ClusterRow[] = []
    const row = async (target: string, replicaCount: number | null, url: string) => {
      const measured = await driveExecutions(url, apiKey, CONCURRENCY, options.durationMs)
      rows.push({ target, replicas: replicaCount, ...measured })
      options.log(`cluster ${target} c=${CONCURRENCY}: p50 ${measured.p50.toFixed(1)} ms, p99 ${measured.p99.toFixed(1)} ms, ${measured.perSecond.toFixed(1)}/s, errors ${measured.errors}`)
    }
    await row('one process, embedded defaults (STORAGE=local, no Redis)', null, embedded.url)
    await row('one replica (Redis, STORAGE=s3), no proxy', null, replicas[0]!.url)
    for (const count of [1, 2, 3]) {
      const proxy = await startRoundRobinProxy(replicas.slice(0, count).map((replica) => replica.url))
      try {
        await row(`${count} replica${count === 1 ? '' : 's'} behind the round-robin proxy`, count, proxyUrl(proxy))
      } finally {
        await closeServer(proxy)
      }
    }

    const forward = await measureForward(replicas[0]!.url, replicas[1]!.url, apiKey)
    options.log(`cluster forward: owner p50 ${forward.ownerP50.toFixed(2)} ms, forwarded p50 ${forward.forwardedP50.toFixed(2)} ms`)
    options.log(`cluster: done in ${since()}`)
    return { rows, forward, redis: costs, load, poolSize }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}

/** POST /v1/exec of `print(1)` as LibreChat sends it, for `user`; its latency in ms. */
async function execute (pool: Pool, apiKey: string, user: number): Promise<number> {
  const started = performance.now()
  const response = await pool.request({
    method: 'POST',
    path: '/v1/exec',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
    body: JSON.stringify({ lang: 'py', code: 'print(1)', user_id: `bench-user-${user}` }),
  })
  const reply = await response.body.json() as { stdout?: string }
  if (response.statusCode !== 200 || reply.stdout !== '1\n') throw new Error(`exec answered ${response.statusCode}: ${JSON.stringify(reply).slice(0, 200)}`)
  return performance.now() - started
}

async function driveExecutions (url: string, apiKey: string, concurrency: number, durationMs: number): Promise<Omit<ClusterRow, 'target' | 'replicas'>> {
  const pool = new Pool(url, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 })
  const latencies: number[] = []
  let errors = 0
  let firstError: string | null = null
  const loop = async (user: number, until: () => boolean, record: boolean) => {
    while (until()) {
      try {
        const latency = await execute(pool, apiKey, user % USERS)
        if (record) latencies.push(latency)
      } catch (error) {
        if (!record) continue
        errors++
        firstError ??= (error as Error).message
      }
    }
  }
  try {
    // warm-up outside the measurement: two executions per client
    await Promise.all(Array.from({ length: concurrency }, async (_, user) => {
      let left = 2
      await loop(user, () => left-- > 0, false)
    }))
    const started = performance.now()
    const deadline = started + durationMs
    await Promise.all(Array.from({ length: concurrency }, async (_, user) => await loop(user, () => performance.now() < deadline, true)))
    const elapsedMs = performance.now() - started
    const sorted = latencies.sort((a, b) => a - b)
    return { concurrency, executions: sorted.length, perSecond: sorted.length / (elapsedMs / 1000), p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), errors, firstError }
  } finally {
    await pool.close()
  }
}

/**
 * A kernel on `ownerUrl`; GET api/kernels/<id> asked of its owner (answered from memory) and of `otherUrl`
 * (a Redis GET for the route, then a signed internal request to the owner), one after the other.
 */
async function measureForward (ownerUrl: string, otherUrl: string, apiKey: string): Promise<ForwardCost> {
  const owner = new Pool(ownerUrl, { connections: 1, keepAliveTimeout: 60_000 })
  const other = new Pool(otherUrl, { connections: 1, keepAliveTimeout: 60_000 })
  const created = await owner.request({ method: 'POST', path: `/api/kernels?token=${apiKey}`, headers: { 'content-type': 'application/json' }, body: '{}' })
  const kernel = await created.body.json() as { id?: string }
  if (created.statusCode !== 201 || kernel.id === undefined) throw new Error(`POST api/kernels answered ${created.statusCode}: ${JSON.stringify(kernel)}`)
  const path = `/api/kernels/${kernel.id}?token=${apiKey}`
  const ask = async (pool: Pool) => {
    const started = performance.now()
    const response = await pool.request({ method: 'GET', path })
    const model = await response.body.json() as { id?: string }
    if (response.statusCode !== 200 || model.id !== kernel.id) throw new Error(`GET api/kernels/<id> answered ${response.statusCode}: ${JSON.stringify(model)}`)
    return performance.now() - started
  }
  try {
    for (let index = 0; index < 20; index++) { await ask(owner); await ask(other) }
    const direct: number[] = []
    const forwarded: number[] = []
    for (let index = 0; index < FORWARD_PAIRS; index++) {
      // which goes first alternates, so neither is always the one after a pause
      if (index % 2 === 0) { direct.push(await ask(owner)); forwarded.push(await ask(other)) } else { forwarded.push(await ask(other)); direct.push(await ask(owner)) }
    }
    direct.sort((a, b) => a - b)
    forwarded.sort((a, b) => a - b)
    const ownerP50 = percentile(direct, 0.5)
    const forwardedP50 = percentile(forwarded, 0.5)
    return { requests: FORWARD_PAIRS, ownerP50, ownerP99: percentile(direct, 0.99), forwardedP50, forwardedP99: percentile(forwarded, 0.99), addedP50: forwardedP50 - ownerP50 }
  } finally {
    await owner.request({ method: 'DELETE', path }).then(async (response) => await response.body.dump()).catch(() => {})
    await Promise.all([owner.close(), other.close()])
  }
}

/**
 * c=1 executions on the embedded process and on a replica, one on each in turn (which goes first alternates),
 * for half of `durationMs` (a c=1 p50 settles long before) and MIN_PAIRS at least: both see the machine as it is at that moment,
 * which on a shared machine changes from one second to the next. Then MONITORED_EXECUTIONS on the replica
 * with Redis's MONITOR on, counting what it is sent.
 */
async function measureRedisCost (embeddedUrl: string, replicaUrl: string, apiKey: string, redisUrl: string, durationMs: number): Promise<RedisCost> {
  const sides = [embeddedUrl, replicaUrl].map((url) => ({ pool: new Pool(url, { connections: 1, keepAliveTimeout: 60_000 }), latencies: [] as number[] }))
  try {
    for (let index = 0; index < WARM_UP_EXECUTIONS; index++) for (const side of sides) await execute(side.pool, apiKey, 0)
    const deadline = performance.now() + durationMs / 2
    for (let pair = 0; pair < MIN_PAIRS || performance.now() < deadline; pair++) {
      for (const side of pair % 2 === 0 ? sides : [...sides].reverse()) side.latencies.push(await execute(side.pool, apiKey, 0))
    }
    const [embeddedP50, sharedP50] = sides.map((side) => percentile(side.latencies.sort((a, b) => a - b), 0.5)) as [number, number]
    const counted = await countRedisCommands(redisUrl, async () => {
      for (let index = 0; index < MONITORED_EXECUTIONS; index++) await execute(sides[1]!.pool, apiKey, 0)
    })
    const roundTripP50 = await measureRoundTrip(redisUrl)
    const admission = await measureAdmission(redisUrl)
    const perExecution = (counts: Map<string, number>) => Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).map(([name, count]) => [name, count / MONITORED_EXECUTIONS]))
    const sent = perExecution(counted.sent)
    return {
      executions: sides[0]!.latencies.length,
      embeddedP50,
      sharedP50,
      addedP50: sharedP50 - embeddedP50,
      roundTripP50,
      ...admission,
      roundTripsPerExecution: Object.values(sent).reduce((sum, count) => sum + count, 0),
      sentPerExecution: sent,
      scriptedPerExecution: perExecution(counted.scripted),
    }
  } finally {
    await Promise.all(sides.map(async (side) => await side.pool.close()))
  }
}

/** What one Redis round trip costs here: PING, one at a time. */
async function measureRoundTrip (redisUrl: string): Promise<number> {
  const client = new Redis(redisUrl, { lazyConnect: true })
  await client.connect()
  try {
    const latencies: number[] = []
    for (let index = 0; index < 1100; index++) {
      const started = performance.now()
      await client.ping()
      if (index >= 100) latencies.push(performance.now() - started)
    }
    return percentile(latencies.sort((a, b) => a - b), 0.5)
  } finally {
    client.disconnect()
  }
}

/**
 * What a replica adds to an execution's path, alone: counting the user in (and out) with the in-memory
 * count of one process and with the shared one in Redis, the same classes the servers use, in turn.
 */
async function measureAdmission (redisUrl: string): Promise<{ admissionLocalP50: number, admissionSharedP50: number }> {
  const redis = await connectRedis(redisUrl)
  try {
    const counts: Array<{ admission: Admission, latencies: number[] }> = [
      { admission: new UserConcurrency(4), latencies: [] },
      { admission: new SharedUserConcurrency(redis, 'bench-admission:', 4, 90_000, 'bench'), latencies: [] },
    ]
    const identity = { tenant: 'legacy', user: 'bench-admission' }
    for (let index = 0; index < 1100; index++) {
      for (const count of counts) {
        const started = performance.now()
        const leave = await count.admission.enter(identity)
        if (index >= 100) count.latencies.push(performance.now() - started)
        leave()
      }
    }
    const [admissionLocalP50, admissionSharedP50] = counts.map((count) => percentile(count.latencies.sort((a, b) => a - b), 0.5)) as [number, number]
    return { admissionLocalP50, admissionSharedP50 }
  } finally {
    redis.disconnect()
  }
}

/**
 * The commands Redis receives while `run` runs, by name (an EVALSHA by the first key's kind, e.g.
 * `evalsha busy:`), sent by clients or run inside their scripts. The heartbeat (the `replicas` key) is no
 * execution's and is left out, with the TIME its script calls.
 */
async function countRedisCommands (redisUrl: string, run: () => Promise<void>): Promise<{ sent: Map<string, number>, scripted: Map<string, number> }> {
  const client = new Redis(redisUrl, { lazyConnect: true })
  await client.connect()
  const monitor = await client.monitor()
  const sent = new Map<string, number>()
  const scripted = new Map<string, number>()
  let heartbeats = 0
  const heartbeatKey = `${PREFIX}replicas`
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    const name = (args[0] ?? '').toLowerCase()
    const key = (name === 'evalsha' || name === 'eval' ? args[3] : args[1]) ?? ''
    if (key === heartbeatKey) { if (source !== 'lua') heartbeats++; return }
    if (name === 'monitor') return
    const label = name.startsWith('eval') ? `${name} ${key.slice(PREFIX.length).replace(/:.*/s, ':')}` : name
    const counts = source === 'lua' ? scripted : sent
    counts.set(label, (counts.get(label) ?? 0) + 1)
  })
  try {
    await run()
    // the last commands of the last execution (a lease given back after the answer) reach Redis just after it
    await new Promise((resolve) => setTimeout(resolve, 200))
  } finally {
    monitor.disconnect()
    client.disconnect()
  }
  const time = (scripted.get('time') ?? 0) - heartbeats
  if (time > 0) scripted.set('time', time); else scripted.delete('time')
  return { sent, scripted }
}

async function closeServer (server: Server): Promise<void> {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
}

const ms = (value: number, digits = 1) => Number.isNaN(value) ? '–' : value.toFixed(digits)

export function describeCluster (result: ClusterResult): string {
  const { forward, redis } = result
  const counts = (perExecution: Record<string, number>) => Object.entries(perExecution).map(([name, count]) => `${count.toFixed(2)} \`${name}\``).join(', ') || 'none'
  return [
    `## Cluster: \`print(1)\` at c=${CONCURRENCY} (${USERS} users), one Redis, one s3rver bucket, replicas on one machine`,
    '',
    `Every replica and the one process have a pool of ${result.poolSize}; they all share this machine's cores, so more replicas show`,
    'the cost of the shared state and the proxy, not scale (on a machine other work also uses, more servers also take a larger share of it).',
    `The proxy runs in the bench's own process. Measured under ${result.load}.`,
    '',
    '| target | c | execs | exec/s | p50 ms | p99 ms | errors |',
    '|---|---|---|---|---|---|---|',
    ...result.rows.map((row) => `| ${row.target} | ${row.concurrency} | ${row.executions} | ${row.perSecond.toFixed(1)} | ${ms(row.p50)} | ${ms(row.p99)} | ${row.errors}${row.firstError === null ? '' : ` (${row.firstError.slice(0, 80)})`} |`),
    '',
    `A forward (GET api/kernels/<id>, ${forward.requests} each, alternating, c=1): on the kernel's replica p50 ${ms(forward.ownerP50, 2)} ms (p99 ${ms(forward.ownerP99, 2)}),` +
      ` through another replica p50 ${ms(forward.forwardedP50, 2)} ms (p99 ${ms(forward.forwardedP99, 2)}): **${ms(forward.addedP50, 2)} ms added** at p50 (a Redis GET for the route and a signed internal request).`,
    '',
    `Redis round trips: an execution sends Redis ${redis.roundTripsPerExecution.toFixed(2)} commands (${counts(redis.sentPerExecution)}), and Redis runs` +
      ` ${counts(redis.scriptedPerExecution)} inside their scripts (MONITOR over ${MONITORED_EXECUTIONS} executions, the heartbeat left out);` +
      ' only the script is awaited before the run, the `zrem` goes out after it. The admission step alone (counting the user in as a server does,' +
      ` 1000 times each in turn) takes ${ms(redis.admissionSharedP50, 3)} ms at p50 in Redis against ${ms(redis.admissionLocalP50, 4)} ms in memory:` +
      ` **${ms(redis.admissionSharedP50 - redis.admissionLocalP50, 3)} ms added** per execution on its own replica (target ≤ 1 ms); one PING to this Redis takes` +
      ` ${ms(redis.roundTripP50, 3)} ms. Whole executions at c=1, ${redis.executions} on each side in turn: the embedded process p50 ${ms(redis.embeddedP50, 2)} ms,` +
      ` a replica on Redis and STORAGE=s3 p50 ${ms(redis.sharedP50, 2)} ms (a difference of ${ms(redis.addedP50, 2)} ms, which on a busy machine is the load's, either way).`,
  ].join('\n')
}

import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { before, describe, test } from 'node:test'
import { readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { GetObjectCommand } from '@aws-sdk/client-s3'
import { Redis } from 'ioredis'
import { PROXY_ERROR_HEADER, SERVED_BY_HEADER, startCluster, type RunningCluster } from '../helpers/cluster.ts'
import { S3_BUCKET } from '../helpers/s3.ts'
import { availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import { createS3Client } from '../../src/storage/s3-file-store.ts'

/**
 * Faults under load, on three replicas behind the round-robin proxy (one Redis, one s3rver bucket): eight
 * clients send a mix of uploads, downloads and executions for two users while Redis restarts, while S3 is
 * away, and while one replica is killed with SIGKILL. Every answer is classified (`verdictOf`); the only
 * failures allowed are the documented 503s of the component that is away, and, for requests the proxy sent
 * to the killed replica, the proxy's own 502 or a response cut short (the load balancer's answer, not
 * Warden's). Every file acknowledged as stored is then downloaded and hashed, and every download that
 * succeeded must have carried its requester's bytes.
 */

const CONCURRENCY = 8
const USERS = ['alice-6650c0ffee0a', 'bob-6650c0ffee0b'] as const
/** a user whose places the killed replica held: they must come back once it has left the replicas' view */
const CAROL = 'carol-6650c0ffee0c'
const MAX_CONCURRENT_PER_USER = 3
/** a request unanswered after this long is a hang (no fault here lasts that long), not a slow answer */
const HANG_MS = 90_000
const MIB = 1024 * 1024

type Operation = 'upload' | 'download' | 'exec'

/** A file Warden acknowledged as stored (an upload's 200, an execution's output), with what it must hold. */
interface StoredRef { sessionId: string, fileId: string, owner: string, sha256: string, size: number }

/** One request of the load and how it ended. */
interface Answer {
  operation: Operation
  user: string
  /** ms since the load began, when it was sent and when its answer was read */
  at: number
  endedAt: number
  /** the HTTP status; 0 when the response was cut short (after its head) */
  status: number
  error: string | null
  /** the replica the proxy sent it to (the x-test-served-by header), null when no head arrived */
  servedBy: number | null
  fromProxy: boolean
  /** what went wrong with a 200 (bytes of another user, a wrong hash): always a failure */
  wrong: string | null
  /** a download of a file of the other user */
  crossUser: boolean
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!

/** A file's bytes start with its owner's name: whoever downloads it can tell whose it is. */
function fileBytes (owner: string, size: number): Buffer {
  const head = Buffer.from(`owner=${owner} nonce=${randomBytes(6).toString('hex')}\n`)
  return Buffer.concat([head, randomBytes(Math.max(0, size - head.length))])
}

function ownerOf (bytes: Buffer): string | null {
  return /^owner=(\S+) /.exec(bytes.subarray(0, 80).toString('latin1'))?.[1] ?? null
}

/** The bytes an execution writes to out.bin for `owner` (a fixed function of its nonce). */
function outputBytes (owner: string, nonce: string): Buffer {
  return Buffer.from(`owner=${owner} nonce=${nonce}\n`.repeat(200))
}

class Load {
  readonly answers: Answer[] = []
  readonly stored: StoredRef[] = []
  readonly #started = Date.now()

  constructor (private readonly cluster: RunningCluster, private readonly options: { largeEvery: number }) {}

  elapsed (): number {
    return Date.now() - this.#started
  }

  /** CONCURRENCY clients, each sending one request after the other until `untilMs` since the load began. */
  async run (untilMs: number): Promise<void> {
    await Promise.all(Array.from({ length: CONCURRENCY }, async (_, client) => {
      for (let round = 0; this.elapsed() < untilMs; round++) {
        const user = USERS[(client + round) % USERS.length]!
        const operation = this.stored.length === 0 ? 'upload' : pick<Operation>(['upload', 'download', 'exec'])
        this.answers.push(await this.send(operation, user))
      }
    }))
  }

  async send (operation: Operation, user: string): Promise<Answer> {
    const at = this.elapsed()
    const base = { operation, user, at, wrong: null, crossUser: false }
    let response: Response
    let target: StoredRef | undefined
    try {
      if (operation === 'upload') {
        const large = this.options.largeEvery > 0 && Math.random() < 1 / this.options.largeEvery
        const bytes = fileBytes(user, large ? 6 * MIB + Math.floor(Math.random() * MIB) : 64 + Math.floor(Math.random() * 64 * 1024))
        const form = new FormData()
        form.append('kind', 'user')
        form.append('id', user)
        form.append('file', new Blob([bytes]), 'data.bin')
        response = await this.request('/upload', { method: 'POST', body: form }, user)
        return await this.settle(base, response, async (body) => {
          const answer = JSON.parse(body.toString()) as { storage_session_id: string, files: Array<{ fileId: string }> }
          this.stored.push({ sessionId: answer.storage_session_id, fileId: answer.files[0]!.fileId, owner: user, sha256: sha256(bytes), size: bytes.length })
          return null
        })
      }
      target = pick(this.stored)
      if (operation === 'download') {
        const file = target
        response = await this.request(`/download/${file.sessionId}/${file.fileId}`, {}, user)
        return await this.settle({ ...base, crossUser: file.owner !== user }, response, async (body) => {
          if (ownerOf(body) !== user) return `${user} downloaded a file of ${ownerOf(body) ?? 'nobody'}`
          return sha256(body) === file.sha256 ? null : `${file.sessionId}/${file.fileId} downloaded ${body.length} bytes, not the ${file.size} stored`
        })
      }
      // an execution reads one of its user's files, prints its hash and writes an output of its own
      const input = this.stored.find((file) => file.owner === user && Math.random() < 0.3) ?? this.stored.find((file) => file.owner === user)
      const nonce = randomBytes(6).toString('hex')
      const code = [
        'import hashlib, os',
        'print(hashlib.sha256(open("in.bin", "rb").read()).hexdigest() if os.path.exists("in.bin") else "none")',
        `open("out.bin", "w").write("owner=${user} nonce=${nonce}\\n" * 200)`,
      ].join('\n')
      const files = input === undefined ? [] : [{ id: input.fileId, storage_session_id: input.sessionId, name: 'in.bin' }]
      response = await this.request('/exec', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ lang: 'py', code, user_id: user, files }) }, user)
      return await this.settle(base, response, async (body) => {
        const result = JSON.parse(body.toString()) as { status: string, stdout: string, files: Array<{ id: string, name: string, storage_session_id: string }> }
        if (result.status !== 'ok') return `an execution ended ${result.status}`
        if (result.stdout !== `${input?.sha256 ?? 'none'}\n`) return `an execution read ${result.stdout.trim()} for ${input?.sha256 ?? 'none'}`
        const output = result.files.find((file) => file.name === 'out.bin')
        if (output === undefined) return 'an execution\'s output is missing'
        const bytes = outputBytes(user, nonce)
        this.stored.push({ sessionId: output.storage_session_id, fileId: output.id, owner: user, sha256: sha256(bytes), size: bytes.length })
        return null
      })
    } catch (error) {
      // no head at all: the proxy always answers (502 for a dead replica), so this is a failure
      return { ...base, endedAt: this.elapsed(), status: -1, error: String((error as Error).cause ?? error), servedBy: null, fromProxy: false }
    }
  }

  private async request (route: string, init: RequestInit, user: string): Promise<Response> {
    const headers = new Headers(init.headers)
    headers.set('x-api-key', this.cluster.proxy.apiKey)
    headers.set('user-id', user)
    return await fetch(`${this.cluster.proxy.apiUrl}${route}`, { ...init, headers, signal: AbortSignal.timeout(HANG_MS) })
  }

  /** Read the whole answer; `accept` checks a 200's body and returns what is wrong with it, if anything. */
  private async settle (base: Omit<Answer, 'status' | 'error' | 'servedBy' | 'fromProxy' | 'endedAt'>, response: Response, accept: (body: Buffer) => Promise<string | null>): Promise<Answer> {
    const served = response.headers.get(SERVED_BY_HEADER)
    const head = { ...base, servedBy: served === null ? null : Number(served), fromProxy: response.headers.get(PROXY_ERROR_HEADER) !== null }
    let body: Buffer
    try {
      body = Buffer.from(await response.arrayBuffer())
    } catch {
      return { ...head, endedAt: this.elapsed(), status: 0, error: 'cut short' }
    }
    if (response.status === 200) return { ...head, endedAt: this.elapsed(), status: 200, error: null, wrong: await accept(body) }
    let error: string | null = null
    try {
      error = (JSON.parse(body.toString()) as { error?: string }).error ?? null
    } catch {}
    return { ...head, endedAt: this.elapsed(), status: response.status, error }
  }
}

/**
 * What an answer is allowed to be. Always: a 200 whose bytes are right, 429 `rate_limited` (a busy user or
 * pool), 404 `file_not_found` for a download of the other user's file (never for one's own: that file would
 * be lost). `away` adds the 503 of the component that is down; `killed` allows, for requests the proxy sent
 * to that replica, the proxy's 502 and a response cut short. Returns why it is not allowed, or null.
 */
interface Allowed {
  away?: 'cluster_unavailable' | 'storage_unavailable'
  killed?: number
  /** which answers may have been cut short after their head (by the component that went away) */
  cutShort?: (answer: Answer) => boolean
}

function verdictOf (answer: Answer, allowed: Allowed): string | null {
  if (answer.wrong !== null) return answer.wrong
  if (answer.status === 200) return answer.crossUser ? 'a download of another user\'s file succeeded' : null
  if (allowed.killed !== undefined && answer.servedBy === allowed.killed && (answer.fromProxy || answer.status === 0)) return null
  if (answer.status === 429 && answer.error === 'rate_limited') return null
  if (answer.status === 404 && answer.error === 'file_not_found' && answer.crossUser) return null
  if (answer.status === 503 && allowed.away !== undefined && answer.error === allowed.away) return null
  if (answer.status === 0 && allowed.cutShort?.(answer) === true) return null
  return answer.status === 0 ? 'cut short' : `${answer.status} ${answer.error ?? '(no JSON error)'}${answer.fromProxy ? ' from the proxy' : ''}`
}

/** The answers not allowed, each with its operation, user, time and replica, for an assertion's message. */
function disallowed (answers: Answer[], allowed: Allowed): string[] {
  return answers.flatMap((answer) => {
    const verdict = verdictOf(answer, allowed)
    return verdict === null ? [] : [`${answer.operation} by ${answer.user} at ${answer.at} ms via replica ${String(answer.servedBy)}: ${verdict}`]
  })
}

function tally (answers: Answer[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const answer of answers) {
    const key = `${answer.operation} ${answer.status}${answer.error === null ? '' : ` ${answer.error}`}${answer.fromProxy ? ' (proxy)' : ''}`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}

/** Download every acknowledged file from `replicas` (in turn) as its owner; the ones that are not whole. */
async function unreadable (stored: StoredRef[], replicas: RunningServer[]): Promise<string[]> {
  const problems: string[] = []
  for (const [index, file] of stored.entries()) {
    const replica = replicas[index % replicas.length]!
    const response = await fetch(`${replica.apiUrl}/download/${file.sessionId}/${file.fileId}`, { headers: { 'x-api-key': replica.apiKey, 'user-id': file.owner }, signal: AbortSignal.timeout(HANG_MS) })
    const bytes = Buffer.from(await response.arrayBuffer())
    if (response.status !== 200) problems.push(`${file.sessionId}/${file.fileId}: ${response.status} ${bytes.toString().slice(0, 200)}`)
    else if (sha256(bytes) !== file.sha256) problems.push(`${file.sessionId}/${file.fileId}: ${bytes.length} bytes of ${file.size}, hash differs`)
  }
  return problems
}

interface ClusterHealth { replica_id: string, replicas_alive: number, redis_reachable: boolean }

async function healthOf (replica: RunningServer): Promise<ClusterHealth> {
  return (await (await fetch(`${replica.baseUrl}/health`, { signal: AbortSignal.timeout(HANG_MS) })).json() as { cluster: ClusterHealth }).cluster
}

async function poolOf (replica: RunningServer): Promise<{ busy: number, waiting: number }> {
  return (await (await fetch(`${replica.baseUrl}/health`, { signal: AbortSignal.timeout(HANG_MS) })).json() as { pool: { busy: number, waiting: number } }).pool
}

/** Poll (at most `attempts` times, 200 ms apart) until `check` holds; its last value either way. */
async function eventually<T> (read: () => Promise<T>, check: (value: T) => boolean, attempts = 150): Promise<T> {
  let value = await read()
  for (let attempt = 0; attempt < attempts && !check(value); attempt++) {
    await sleep(200)
    value = await read()
  }
  return value
}

async function execOn (replica: RunningServer, user: string, code: string, signal?: AbortSignal): Promise<{ status: number, body: Record<string, any> }> {
  const response = await fetch(`${replica.apiUrl}/exec`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': replica.apiKey, 'user-id': user },
    body: JSON.stringify({ lang: 'py', code, user_id: user }),
    signal: signal ?? AbortSignal.timeout(HANG_MS),
  })
  return { status: response.status, body: await response.json() as Record<string, any> }
}

/** A few requests of each kind for each user through the proxy, one at a time: each works (again). */
async function everythingWorks (load: Load): Promise<void> {
  const answers = []
  for (const user of USERS) {
    for (const operation of ['upload', 'download', 'exec', 'download', 'exec'] as const) answers.push(await load.send(operation, user))
  }
  assert.deepEqual(disallowed(answers, {}), [])
  assert.deepEqual(answers.filter((answer) => answer.status !== 200 && !answer.crossUser).map((answer) => `${answer.operation}: ${answer.status}`), [])
}

for (const driver of availableDrivers()) {
  describe(`three replicas under faults, at c=${CONCURRENCY} (${driver})`, () => {
    const suite = suiteContext()
    let cluster: RunningCluster
    before(async () => {
      cluster = await startCluster(suite, { driver, replicas: 3, env: { POOL_MIN: '1', POOL_MAX: '2', MAX_CONCURRENT_PER_USER: String(MAX_CONCURRENT_PER_USER), EXEC_TIMEOUT_MS: '120000' } })
    })

    test('Redis restarted mid-load: requests fail with 503 cluster_unavailable while it is away, never another 5xx or a hang; they work again after; no one reads another user\'s file', { timeout: 180_000 }, async (t) => {
      const load = new Load(cluster, { largeEvery: 0 })
      const running = load.run(14_000)
      await sleep(4_000)
      const awayFrom = load.elapsed()
      await cluster.redis.stop()
      await sleep(4_000)
      await cluster.redis.start()
      const backAt = load.elapsed()
      await running
      t.diagnostic(`answers: ${JSON.stringify(tally(load.answers))}`)
      const away = load.answers.filter((answer) => answer.at >= awayFrom && answer.at < backAt)
      assert.ok(away.some((answer) => answer.error === 'cluster_unavailable'), `Redis was away for the load: ${JSON.stringify(tally(away))}`)
      assert.deepEqual(disallowed(load.answers, { away: 'cluster_unavailable' }), [], JSON.stringify(tally(load.answers)))
      assert.deepEqual(disallowed(load.answers.filter((answer) => answer.operation !== 'exec'), {}), [], 'uploads and downloads do not need Redis')
      const views = await Promise.all(cluster.replicas.map(async (replica) => await eventually(async () => await healthOf(replica), (view) => view.redis_reachable && view.replicas_alive === 3)))
      assert.deepEqual(views.map((view) => [view.redis_reachable, view.replicas_alive]), [[true, 3], [true, 3], [true, 3]])
      await everythingWorks(load)
      assert.deepEqual(await unreadable(load.stored, cluster.replicas), [])
    })

    test('S3 away mid-load: uploads get 503 storage_unavailable in JSON; afterwards every acknowledged file downloads whole, and no file in the bucket is half-written', { timeout: 180_000 }, async (t) => {
      const load = new Load(cluster, { largeEvery: 8 })
      const running = load.run(14_000)
      await sleep(4_000)
      const awayFrom = load.elapsed()
      await cluster.s3.stop()
      await sleep(4_000)
      await cluster.s3.start()
      const backAt = load.elapsed()
      await running
      t.diagnostic(`answers: ${JSON.stringify(tally(load.answers))}`)
      const uploadsAway = load.answers.filter((answer) => answer.operation === 'upload' && answer.at >= awayFrom && answer.at < backAt)
      assert.ok(uploadsAway.some((answer) => answer.status === 503 && answer.error === 'storage_unavailable'), `S3 was away for uploads: ${JSON.stringify(tally(uploadsAway))}`)
      // a download whose bytes were flowing when S3 went has sent its head: it can only be cut short
      const cutShort = (answer: Answer) => answer.operation === 'download' && answer.at <= awayFrom && answer.endedAt >= awayFrom
      assert.deepEqual(disallowed(load.answers, { away: 'storage_unavailable', cutShort }), [], JSON.stringify(tally(load.answers)))
      await everythingWorks(load)
      assert.deepEqual(await unreadable(load.stored, cluster.replicas), [])
      assert.deepEqual(await halfWritten(cluster, cluster.replicas[0]!), [])
    })

    test('one replica of three killed with SIGKILL mid-load: nothing stored is lost or corrupted, only requests on that replica fail (the proxy\'s 502), and the survivors\' view, routes and counts are right', { timeout: 240_000 }, async (t) => {
      const victim = 2
      const survivors = cluster.replicas.filter((_, index) => index !== victim)
      const dead = cluster.replicas[victim]!
      const deadId = (await healthOf(dead)).replica_id
      // Carol's places are all taken on the victim, and a paused programmatic run lives there
      // (one at a time, each admitted before the next: an execution holds its place from admission on)
      const carolRuns: Array<Promise<unknown>> = []
      for (let run = 1; run <= MAX_CONCURRENT_PER_USER; run++) {
        carolRuns.push(execOn(dead, CAROL, 'import time; time.sleep(100)').catch(() => null))
        const pool = await eventually(async () => await poolOf(dead), (stats) => stats.busy + stats.waiting >= run)
        assert.ok(pool.busy + pool.waiting >= run, JSON.stringify(pool))
      }
      const refused = await execOn(survivors[0]!, CAROL, 'print(1)')
      assert.deepEqual([refused.status, refused.body.error], [429, 'rate_limited'], 'Carol\'s places are held on the victim')
      const paused = await pauseOn(dead)
      const load = new Load(cluster, { largeEvery: 16 })
      const running = load.run(30_000)
      await sleep(10_000)
      const killedAt = load.elapsed()
      const exited = new Promise((resolve) => dead.process.once('exit', resolve))
      dead.process.kill('SIGKILL')
      await exited
      await running
      await Promise.all(carolRuns)
      t.diagnostic(`answers: ${JSON.stringify(tally(load.answers))}`)
      const keys = new Redis(cluster.redis.url)
      try {
        assert.deepEqual(disallowed(load.answers, { killed: victim }), [], JSON.stringify(tally(load.answers)))
        const cutByKill = load.answers.filter((answer) => answer.servedBy === victim && (answer.fromProxy || answer.status === 0))
        assert.ok(cutByKill.length > 0, `the load reached the killed replica: ${JSON.stringify(tally(load.answers))}`)
        assert.deepEqual(cutByKill.filter((answer) => answer.endedAt < killedAt).map((answer) => `${answer.operation} at ${answer.at} ms`), [], 'the victim answered in full until it was killed')
        assert.ok(load.answers.some((answer) => answer.at > killedAt && answer.status === 200), 'the survivors served the load after the kill')
        assert.deepEqual(await unreadable(load.stored, survivors), [])
        // the survivors' view: two replicas, once the victim's beats are missed; its routes are gone with them
        const views = await Promise.all(survivors.map(async (replica) => await eventually(async () => await healthOf(replica), (view) => view.replicas_alive === 2)))
        assert.deepEqual(views.map((view) => view.replicas_alive), [2, 2])
        const routes = await keys.keys(`${cluster.prefix}route:*`)
        const owners = routes.length === 0 ? [] : await keys.mget(...routes)
        assert.deepEqual(owners.filter((owner) => owner?.startsWith(`${deadId} `)), [], 'no route names the killed replica')
        for (const replica of survivors) {
          const resumed = await post(replica, { continuation_token: paused.token, tool_results: paused.results })
          assert.deepEqual([resumed.status, resumed.body.error], [404, 'not_found'], 'a run that lived on the killed replica is the contract\'s unknown run')
        }
        // Carol's places came back with the victim's departure: she runs MAX_CONCURRENT_PER_USER at once again
        const again = await Promise.all(Array.from({ length: MAX_CONCURRENT_PER_USER }, async (_, index) => await execOn(survivors[index % survivors.length]!, CAROL, 'import time; time.sleep(1); print("again")')))
        assert.deepEqual(again.map((run) => [run.status, run.body.stdout]), Array.from({ length: MAX_CONCURRENT_PER_USER }, () => [200, 'again\n']), JSON.stringify(again.map((run) => run.body)))
      } finally {
        keys.disconnect()
      }
    })
  })
}

async function post (replica: RunningServer, body: unknown): Promise<{ status: number, body: Record<string, any> }> {
  const response = await fetch(`${replica.apiUrl}/exec/programmatic`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': replica.apiKey, 'user-id': CAROL },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(HANG_MS),
  })
  return { status: response.status, body: await response.json() as Record<string, any> }
}

async function pauseOn (replica: RunningServer): Promise<{ token: string, results: unknown[] }> {
  const started = await post(replica, { code: 'print("weather:", await get_weather(city="SF"))', tools: [{ name: 'get_weather' }] })
  assert.equal(started.body.status, 'tool_call_required', JSON.stringify(started.body))
  return { token: started.body.continuation_token as string, results: [{ call_id: started.body.tool_calls[0].id, result: 'sunny', is_error: false }] }
}

/** s3rver's file for an object's bytes: `<key>._S3rver_object` under the bucket's directory (its filesystem store) */
const S3RVER_OBJECT = '._S3rver_object'

/**
 * Every file in the bucket (its metadata object exists) that a replica would serve other than whole. Each
 * is downloaded through `replica` for the tenant (no user): a 200 must carry exactly the bytes its metadata
 * and its data object say. Not served (404) is fine: a file whose upload S3's stop cut short, never
 * acknowledged. s3rver writes an object in place, so such an upload can leave a metadata object empty or
 * cut (Warden: 404), or one s3rver itself cannot read back (it answers 500; Warden: 503 storage_unavailable).
 */
async function halfWritten (cluster: RunningCluster, replica: RunningServer): Promise<string[]> {
  const client = createS3Client(cluster.s3.settings)
  const problems: string[] = []
  try {
    const prefix = `${cluster.s3.settings.prefix}files/`
    // the bucket as s3rver keeps it on disk: its own listing fails outright (InternalError) once an
    // upload cut short has left one of its per-object records unreadable
    const sizes = new Map<string, number>()
    const metadata: string[] = []
    const root = path.join(cluster.s3.directory, S3_BUCKET)
    for (const name of await readdir(path.join(root, prefix), { recursive: true })) {
      if (!name.endsWith(S3RVER_OBJECT)) continue
      const key = `${prefix}${name.slice(0, -S3RVER_OBJECT.length)}`
      const { size } = await stat(path.join(root, prefix, name))
      if (key.endsWith('.data')) sizes.set(key.slice(0, -'.data'.length), size)
      if (key.endsWith('.json')) metadata.push(key.slice(0, -'.json'.length))
    }
    assert.ok(metadata.length > 0, 'the bucket holds the files')
    for (const key of metadata) {
      const response = await fetch(`${replica.apiUrl}/download/${key.slice(prefix.length)}`, { headers: { 'x-api-key': replica.apiKey }, signal: AbortSignal.timeout(HANG_MS) })
      const body = Buffer.from(await response.arrayBuffer())
      const declared = await declaredSize(client, `${key}.json`)
      if (response.status === 200) {
        if (body.length !== declared || body.length !== sizes.get(key)) problems.push(`${key}: served ${body.length} bytes; its metadata says ${String(declared)}, the bucket holds ${String(sizes.get(key))}`)
      } else if (!(response.status === 404 || (response.status === 503 && declared === null))) {
        problems.push(`${key}: ${response.status} ${body.toString().slice(0, 200)}`)
      }
    }
  } finally {
    client.destroy()
  }
  return problems
}

/** The size a metadata object declares; null where s3rver cannot serve it or it is not whole JSON. */
async function declaredSize (client: ReturnType<typeof createS3Client>, key: string): Promise<number | null> {
  try {
    const object = await client.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: key }))
    return (JSON.parse(await object.Body!.transformToString()) as { size: number }).size
  } catch {
    return null
  }
}

import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { KernelManager, ServerConnection, type Kernel } from '@jupyterlab/services'
import { Redis } from 'ioredis'
import WebSocket from 'ws'
import { startRedis, type RunningRedis } from '../helpers/redis.ts'
import { startS3, s3Env } from '../helpers/s3.ts'
import { api, availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * The routing table for live things across replicas: a kernel or a paused run lives in one replica's
 * memory; a request for it that reaches another replica is forwarded to its holder over the internal
 * route (signed with CLUSTER_SECRET, acting for the identity the first replica authenticated). A replica
 * that drains (SIGTERM) still serves its paused runs until they end, then removes its routes; one that
 * dies (SIGKILL) has its routes expire with its heartbeat, and the others answer the contract's "no such
 * kernel / run" for them. Requests go to a chosen replica here.
 */

const SECRET = 'forwarding-test-cluster-secret-0123456789'
const ALICE = { 'user-id': 'alice-6650c0ffee01' }

interface ClusterHealth { replica_id: string, replicas_alive: number, forwarded: number, routing_misses: number, live_routes: number }

async function clusterOf (server: RunningServer): Promise<ClusterHealth> {
  return (await (await fetch(`${server.baseUrl}/health`)).json() as { cluster: ClusterHealth }).cluster
}

async function post (server: RunningServer, body: unknown, headers: Record<string, string> = ALICE): Promise<{ status: number, body: Record<string, any> }> {
  const response = await api(server, '/exec/programmatic', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  return { status: response.status, body: await response.json() as Record<string, any> }
}

async function pause (server: RunningServer): Promise<{ token: string, results: unknown[] }> {
  const started = await post(server, { code: 'print("weather:", await get_weather(city="SF"))', tools: [{ name: 'get_weather' }] })
  assert.equal(started.body.status, 'tool_call_required', JSON.stringify(started.body))
  return { token: started.body.continuation_token as string, results: [{ call_id: started.body.tool_calls[0].id, result: 'sunny', is_error: false }] }
}

function jupyter (server: RunningServer) {
  return ServerConnection.makeSettings({
    baseUrl: `${server.baseUrl}/`,
    wsUrl: `${server.baseUrl.replace('http', 'ws')}/`,
    token: server.apiKey,
    appendToken: true,
    WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
    fetch,
  })
}

async function runCell (kernel: Kernel.IKernelConnection, code: string): Promise<string> {
  let text = ''
  const future = kernel.requestExecute({ code })
  future.onIOPub = (message) => {
    const content = message.content as { text?: string, data?: Record<string, string> }
    if (message.header.msg_type === 'stream') text += content.text ?? ''
    if (message.header.msg_type === 'execute_result') text += content.data?.['text/plain'] ?? ''
  }
  const reply = await future.done
  assert.equal(reply.content.status, 'ok')
  return text
}

/** Poll (at most `attempts` times, 100 ms apart) until `check` holds; its last value either way. */
async function eventually<T> (read: () => Promise<T>, check: (value: T) => boolean, attempts = 150): Promise<T> {
  let value = await read()
  for (let attempt = 0; attempt < attempts && !check(value); attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    value = await read()
  }
  return value
}

for (const driver of availableDrivers()) {
  describe(`forwarding live things between replicas (${driver})`, () => {
    const suite = suiteContext()
    let redis: RunningRedis
    let keys: Redis
    const prefix = `f${Date.now()}:`
    let a: RunningServer
    let b: RunningServer
    let c: RunningServer
    before(async () => {
      redis = await startRedis(suite as unknown as { after (fn: () => Promise<void>): void })
      const s3 = await startS3(suite as unknown as { after (fn: () => Promise<void>): void })
      keys = new Redis(redis.url)
      suite.after(async () => { keys.disconnect() })
      const env = { ...s3Env(s3), REDIS_URL: redis.url, REDIS_PREFIX: prefix, CLUSTER_SECRET: SECRET, POOL_MIN: '1', POOL_MAX: '2', SHUTDOWN_TIMEOUT_MS: '30000' }
      const apiKey = `forwarding-${Math.random().toString(36).slice(2)}`
      ;[a, b, c] = await Promise.all([0, 1, 2].map(async () => await startServer(suite, { driver, env, apiKey }))) as [RunningServer, RunningServer, RunningServer]
    })

    it('a run paused on one replica is continued through another; its used token is then unknown everywhere', async () => {
      const before = await clusterOf(b)
      const { token, results } = await pause(a)
      const stolen = await post(b, { continuation_token: token, tool_results: results }, { 'user-id': 'mallory-6650c0ffee09' })
      assert.equal(stolen.status, 404, 'another user\'s continuation is forwarded and refused by the owner')
      const done = await post(b, { continuation_token: token, tool_results: results })
      assert.equal(done.status, 200, JSON.stringify(done.body))
      assert.equal(done.body.status, 'completed')
      assert.equal(done.body.stdout, 'weather: sunny\n')
      for (const replica of [a, b]) {
        const replayed = await post(replica, { continuation_token: token, tool_results: results })
        assert.equal(replayed.status, 404)
        assert.equal(replayed.body.error, 'not_found')
      }
      const after = await clusterOf(b)
      assert.equal(after.forwarded - before.forwarded, 2)
      assert.equal(after.routing_misses - before.routing_misses, 1, 'the replayed token on b found no route')
      assert.match(await (await fetch(`${b.baseUrl}/metrics`)).text(), /^warden_cluster_forwarded_total\{kind="ptc"\} [1-9]/m)
    })

    it('a kernel started on one replica is driven through another over REST and its WebSocket', async () => {
      const throughA = new KernelManager({ serverSettings: jupyter(a) })
      const started = await throughA.startNew({ name: 'python3' })
      const throughB = new KernelManager({ serverSettings: jupyter(b) })
      const kernel = throughB.connectTo({ model: { id: started.id, name: 'python3' } })
      try {
        assert.equal(await runCell(started, 'x = 41'), '')
        assert.equal(await runCell(kernel, 'print(x + 1)'), '42\n')
        const model = await fetch(`${b.baseUrl}/api/kernels/${started.id}?token=${b.apiKey}`)
        assert.equal(model.status, 200)
        assert.equal((await model.json() as { id: string }).id, started.id)
        const interrupted = await fetch(`${b.baseUrl}/api/kernels/${started.id}/interrupt?token=${b.apiKey}`, { method: 'POST' })
        assert.equal(interrupted.status, 204)
        const deleted = await fetch(`${b.baseUrl}/api/kernels/${started.id}?token=${b.apiKey}`, { method: 'DELETE' })
        assert.equal(deleted.status, 204)
        assert.equal((await fetch(`${a.baseUrl}/api/kernels/${started.id}?token=${a.apiKey}`)).status, 404)
        assert.equal((await fetch(`${b.baseUrl}/api/kernels/${started.id}?token=${b.apiKey}`)).status, 404)
      } finally {
        kernel.dispose()
        started.dispose()
        throughA.dispose()
        throughB.dispose()
      }
    })

    it('the internal route cannot be forged: without the secret\'s signature it is a 404, and a wrong credential on a forward is never trusted', async () => {
      const { token, results } = await pause(a)
      const body = JSON.stringify({ continuation_token: token, tool_results: results })
      const identity = Buffer.from(JSON.stringify({ tenant: 'default', user: 'alice-6650c0ffee01' })).toString('base64url')
      const forged: Array<Record<string, string>> = [
        {},
        { 'x-warden-forwarded-identity': identity, 'x-warden-forwarded-at': String(Date.now()), 'x-warden-forwarded-signature': '00'.repeat(32) },
        { 'x-warden-forwarded-identity': identity, 'x-warden-forwarded-at': String(Date.now()), 'x-warden-forwarded-signature': 'zz' },
        { 'x-warden-forwarded-identity': identity, 'x-warden-forwarded-at': String(Date.now()) },
      ]
      for (const headers of forged) {
        const response = await fetch(`${a.baseUrl}/_cluster/forward/v1/exec/programmatic`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': a.apiKey, ...headers }, body })
        assert.equal(response.status, 404, JSON.stringify(headers))
        assert.equal((await response.json() as { error: string }).error, 'not_found')
      }
      // the signed headers on a public route carry nothing: no key is still a 401
      const unauthenticated = await fetch(`${a.baseUrl}/v1/exec/programmatic`, { method: 'POST', headers: { 'content-type': 'application/json', ...forged[1]! }, body })
      assert.equal(unauthenticated.status, 401)
      assert.equal((await post(a, { continuation_token: token, tool_results: results })).body.status, 'completed', 'the run was untouched')
    })

    it('a draining replica (SIGTERM) is not ready, still serves its paused run through another replica, then removes its routes and leaves', async () => {
      const { token, results } = await pause(c)
      const cId = (await clusterOf(c)).replica_id
      assert.ok((await keys.mget('none', ...await keys.keys(`${prefix}route:*`))).some((value) => value?.startsWith(`${cId} `)), 'c advertises its paused run')
      const exited = new Promise<number | null>((resolve) => c.process.once('exit', resolve))
      c.process.kill('SIGTERM')
      const ready = await eventually(async () => (await fetch(`${c.baseUrl}/health/ready`)).status, (status) => status === 503)
      assert.equal(ready, 503, 'draining: not ready')
      const refused = await post(c, { code: 'print(1)', tools: [{ name: 'get_weather' }] })
      assert.equal(refused.status, 503, 'no new live work while draining')
      assert.equal(refused.body.error, 'shutting_down')
      const done = await post(a, { continuation_token: token, tool_results: results })
      assert.equal(done.status, 200, JSON.stringify(done.body))
      assert.equal(done.body.stdout, 'weather: sunny\n')
      assert.equal(await exited, 0)
      const left = await Promise.all([keys.zscore(`${prefix}replicas`, cId), keys.mget('none', ...await keys.keys(`${prefix}route:*`))])
      assert.equal(left[0], null, 'c left the replicas\' view')
      assert.ok(!left[1].some((value) => value?.startsWith(`${cId} `)), 'c removed its routes')
    })

    it('a replica killed without draining (SIGKILL) has its routes expire with its heartbeat; the others answer 404 for its kernel and its run', async () => {
      const manager = new KernelManager({ serverSettings: jupyter(b) })
      const kernel = await manager.startNew({ name: 'python3' })
      const { token, results } = await pause(b)
      const bId = (await clusterOf(b)).replica_id
      const held = async () => (await keys.mget('none', ...await keys.keys(`${prefix}route:*`))).filter((value) => value?.startsWith(`${bId} `)).length
      assert.equal(await held(), 2, 'b holds a kernel and a paused run')
      const missesBefore = (await clusterOf(a)).routing_misses
      b.process.kill('SIGKILL')
      assert.equal(await eventually(held, (count) => count === 0), 0, 'b\'s routes expired')
      const run = await post(a, { continuation_token: token, tool_results: results })
      assert.equal(run.status, 404)
      assert.equal(run.body.error, 'not_found')
      const model = await fetch(`${a.baseUrl}/api/kernels/${kernel.id}?token=${a.apiKey}`)
      assert.equal(model.status, 404)
      assert.equal((await model.json() as { error: string }).error, 'not_found')
      assert.equal((await clusterOf(a)).routing_misses - missesBefore, 2)
      assert.equal((await eventually(async () => await clusterOf(a), (view) => view.replicas_alive === 1)).replicas_alive, 1)
      kernel.dispose()
      manager.dispose()
    })
  })
}

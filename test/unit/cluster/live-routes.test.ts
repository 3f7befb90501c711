import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { Redis } from 'ioredis'
import { LiveRoutes } from '../../../src/cluster/live-routes.ts'
import { connectRedis } from '../../../src/cluster/redis.ts'
import { REPLICA_TTL_MS } from '../../../src/cluster/replicas.ts'
import { startRedis } from '../../helpers/redis.ts'

let redis: Redis
const cleanups: Array<() => Promise<void>> = []
before(async () => {
  const server = await startRedis({ after: (fn) => { cleanups.push(fn) } })
  redis = await connectRedis(server.url)
})
after(async () => {
  redis.disconnect()
  for (const cleanup of cleanups.reverse()) await cleanup()
})

test('a route names its replica and address, lives no longer than REPLICA_TTL_MS unless refreshed, and only its holder removes it', async () => {
  const a = new LiveRoutes(redis, 'r1:', 'replica-a')
  const b = new LiveRoutes(redis, 'r1:', 'replica-b')
  a.start('http://10.0.0.1:8000')
  b.start('http://10.0.0.2:8000')
  a.add('kernel', 'k1')
  const owner = async () => await b.owner('kernel', 'k1')
  for (let attempt = 0; attempt < 50 && await owner() === null; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.deepEqual(await owner(), { replicaId: 'replica-a', url: 'http://10.0.0.1:8000' })
  const ttlMs = await redis.pttl('r1:route:kernel:k1')
  assert.ok(ttlMs > 0 && ttlMs <= REPLICA_TTL_MS, `ttl ${ttlMs}`)
  b.remove('kernel', 'k1') // b does not hold it: nothing happens
  assert.equal(b.held, 0)
  assert.deepEqual(await owner(), { replicaId: 'replica-a', url: 'http://10.0.0.1:8000' })
  await a.clear()
  await b.clear()
  assert.equal(await owner(), null)
})

test('a continuation token is routed by its hash: the token itself is never a key or a value in Redis', async () => {
  const routes = new LiveRoutes(redis, 'r2:', 'replica-a')
  routes.start('http://10.0.0.1:8000')
  const token = 'secret-continuation-token-0123456789abcdefgh'
  routes.add('ptc', token)
  for (let attempt = 0; attempt < 50 && await routes.owner('ptc', token) === null; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal((await routes.owner('ptc', token))?.replicaId, 'replica-a')
  const keys = await redis.keys('r2:*')
  assert.equal(keys.length, 1)
  assert.ok(!keys[0]!.includes(token))
  assert.ok(!(await redis.get(keys[0]!))!.includes(token))
  routes.remove('ptc', token)
  for (let attempt = 0; attempt < 50 && await routes.owner('ptc', token) !== null; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal(await routes.owner('ptc', token), null)
  await routes.clear()
})

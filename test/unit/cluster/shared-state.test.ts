import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Redis } from 'ioredis'
import { connectRedis } from '../../../src/cluster/redis.ts'
import { HEARTBEAT_MS, ReplicaRegistry, REPLICA_TTL_MS } from '../../../src/cluster/replicas.ts'
import { SharedUserConcurrency } from '../../../src/cluster/shared-concurrency.ts'
import { SharedWorkspaceStore } from '../../../src/cluster/shared-workspaces.ts'
import { fileTable } from '../../../src/storage/workspaces.ts'
import { isWardenError, WARDEN_ERRORS } from '../../../src/errors.ts'
import { newId } from '../../../src/storage/ids.ts'
import { startRedis, type RunningRedis } from '../../helpers/redis.ts'

/**
 * The state replicas share in Redis (a real redis-server on a free loopback port). "Two replicas" are two
 * clients on their own connections, as two processes would be.
 */

const alice = { tenant: 't', user: 'alice' }
const bob = { tenant: 't', user: 'bob' }
const LIMITS = { maxFiles: 3, maxBytes: 100 }
const ref = (size = 10) => ({ storageSessionId: newId(), fileId: newId(), size })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

let redis: RunningRedis
const clients: Redis[] = []
const cleanups: Array<() => Promise<void>> = []
before(async () => { redis = await startRedis({ after: (fn) => { cleanups.push(fn) } }) })
after(async () => {
  for (const client of clients) client.disconnect()
  for (const cleanup of cleanups) await cleanup()
})

async function replica (): Promise<Redis> {
  const client = await connectRedis(redis.url)
  clients.push(client)
  return client
}

describe('workspaces shared in Redis', () => {
  test('a workspace written through one replica is read through another, by its owner only', async () => {
    const prefix = `t-${newId()}:`
    const [a, b] = [new SharedWorkspaceStore(await replica(), prefix), new SharedWorkspaceStore(await replica(), prefix)]
    const id = newId()
    const file = ref()
    assert.deepEqual(await a.apply(id, 'runtime', alice, { put: { 'a.txt': file }, remove: [] }, LIMITS), [])
    assert.deepEqual((await b.get(id, alice))?.files, fileTable([['a.txt', file]]))
    assert.equal(await b.get(id, bob), null, 'another owner sees nothing')
  })

  test('changes apply as deltas within the limits, as on disk', async () => {
    const store = new SharedWorkspaceStore(await replica(), `t-${newId()}:`)
    const id = newId()
    await store.apply(id, 'session', alice, { put: { a: ref(), b: ref() }, remove: [] }, LIMITS)
    assert.deepEqual(await store.apply(id, 'session', alice, { put: { c: ref(), d: ref(), e: ref() }, remove: ['a'] }, LIMITS), ['e'])
    assert.deepEqual(Object.keys((await store.get(id, alice))?.files ?? {}).sort(), ['b', 'c', 'd'])
    assert.deepEqual(await store.apply(id, 'session', alice, { put: { b: ref(85) }, remove: [] }, LIMITS), ['b'])
    assert.deepEqual(Object.keys((await store.get(id, alice))?.files ?? {}).sort(), ['c', 'd'])
  })

  test('concurrent changes of one workspace through two replicas are applied one after the other: none is lost', async () => {
    const prefix = `t-${newId()}:`
    const replicas = [new SharedWorkspaceStore(await replica(), prefix), new SharedWorkspaceStore(await replica(), prefix)]
    const id = newId()
    const limits = { maxFiles: 100, maxBytes: 10_000 }
    await Promise.all(Array.from({ length: 30 }, async (_, index) =>
      await replicas[index % 2]!.apply(id, 'runtime', alice, { put: { [`f${index}`]: ref() }, remove: [] }, limits)))
    assert.equal(Object.keys((await replicas[0]!.get(id, alice))?.files ?? {}).length, 30)
  })

  test('listOwned is least recently used first, the sweep removes what is older than the TTL, delete removes one', async () => {
    const store = new SharedWorkspaceStore(await replica(), `t-${newId()}:`)
    const [first, second, bobs] = [newId(), newId(), newId()]
    await store.apply(first, 'runtime', alice, { put: { a: ref() }, remove: [] }, LIMITS)
    await sleep(5)
    await store.apply(second, 'runtime', alice, { put: { a: ref() }, remove: [] }, LIMITS)
    await store.apply(bobs, 'runtime', bob, { put: { a: ref() }, remove: [] }, LIMITS)
    await sleep(5)
    await store.apply(first, 'runtime', alice, { put: {}, remove: [] }, LIMITS) // a use, no change
    assert.deepEqual((await store.listOwned(alice, 'runtime')).map((workspace) => workspace.id), [second, first])
    assert.deepEqual(await store.listOwned(alice, 'session'), [])
    await store.delete(second)
    assert.deepEqual((await store.listOwned(alice, 'runtime')).map((workspace) => workspace.id), [first])
    assert.equal(await store.sweep(60_000), 0)
    assert.equal(await store.sweep(60_000, Date.now() + 120_000), 2)
    assert.equal(await store.get(first, alice), null)
    assert.equal(await store.get(bobs, bob), null)
  })
})

/** A replica's admission on its own connection, registered in the replicas' view as a server's is. */
async function admissionOf (prefix: string, limit: number, leaseMs: number): Promise<{ admission: SharedUserConcurrency, client: Redis, registry: ReplicaRegistry }> {
  const client = await replica()
  const registry = new ReplicaRegistry(client, prefix)
  await registry.join()
  cleanups.push(async () => { await registry.leave() })
  return { admission: new SharedUserConcurrency(client, prefix, limit, leaseMs, registry.replicaId), client, registry }
}

describe('per-user concurrency counted across replicas', () => {
  test('the limit holds across two replicas; counting out frees a place for either', async () => {
    const prefix = `t-${newId()}:`
    const { admission: a } = await admissionOf(prefix, 2, 60_000)
    const { admission: b } = await admissionOf(prefix, 2, 60_000)
    const user = { tenant: 't', user: newId() }
    const leaveA = await a.enter(user)
    const leaveB = await b.enter(user)
    await assert.rejects(Promise.resolve(a.enter(user)), (error) => isWardenError(error, WARDEN_ERRORS.userBusy))
    await assert.rejects(Promise.resolve(b.enter(user)), (error) => isWardenError(error, WARDEN_ERRORS.userBusy))
    const other = await b.enter({ tenant: 't', user: newId() })
    other()
    leaveA()
    leaveA() // twice counts out once
    await sleep(50) // the count-out is sent without waiting for it
    const again = await b.enter(user)
    await assert.rejects(Promise.resolve(a.enter(user)), (error) => isWardenError(error, WARDEN_ERRORS.userBusy))
    leaveB()
    again()
  })

  test('the places of a replica that died without counting out come back when its leases run out', async () => {
    const prefix = `t-${newId()}:`
    const { admission: dying, client } = await admissionOf(prefix, 1, 300)
    const user = { tenant: 't', user: newId() }
    await dying.enter(user)
    client.disconnect()
    const { admission: survivor } = await admissionOf(prefix, 1, 300)
    await assert.rejects(Promise.resolve(survivor.enter(user)), (error) => isWardenError(error, WARDEN_ERRORS.userBusy))
    await sleep(400)
    const leave = await survivor.enter(user)
    leave()
  })

  test('the places of a replica that died come back once it left the replicas\' view, long before its leases run out', async () => {
    const prefix = `t-${newId()}:`
    const { admission: dying, client } = await admissionOf(prefix, 2, 10 * 60_000)
    const { admission: survivor } = await admissionOf(prefix, 2, 10 * 60_000)
    const user = { tenant: 't', user: newId() }
    await dying.enter(user)
    await dying.enter(user)
    client.disconnect() // no more beats, no count-outs: as a replica killed with SIGKILL
    await assert.rejects(Promise.resolve(survivor.enter(user)), (error) => isWardenError(error, WARDEN_ERRORS.userBusy))
    await sleep(REPLICA_TTL_MS + HEARTBEAT_MS)
    const leaves = [await survivor.enter(user), await survivor.enter(user)]
    await assert.rejects(Promise.resolve(survivor.enter(user)), (error) => isWardenError(error, WARDEN_ERRORS.userBusy), 'the survivor\'s own leases still count')
    for (const leave of leaves) leave()
  })
})

describe('replicas beat into Redis', () => {
  test('each sees the others; one that leaves is gone at the next beat, one that dies once its beats are missed', async () => {
    const prefix = `t-${newId()}:`
    const dying = await replica()
    const [a, b, c] = [new ReplicaRegistry(await replica(), prefix), new ReplicaRegistry(await replica(), prefix), new ReplicaRegistry(dying, prefix)]
    await a.join()
    await b.join()
    await c.join()
    assert.equal(c.view().replicasAlive, 3)
    await sleep(HEARTBEAT_MS + 200)
    assert.deepEqual([a.view().replicasAlive, b.view().replicasAlive], [3, 3])
    assert.notEqual(a.view().replicaId, b.view().replicaId)
    await b.leave()
    await sleep(HEARTBEAT_MS + 200)
    assert.equal(a.view().replicasAlive, 2)
    dying.disconnect() // c can no longer beat: as a replica killed with SIGKILL
    await sleep(REPLICA_TTL_MS + HEARTBEAT_MS + 200)
    assert.equal(c.view().redisReachable, false)
    assert.deepEqual([a.view().replicasAlive, a.view().redisReachable], [1, true])
    await a.leave()
    await c.leave()
  })
})

describe('Redis away', () => {
  test('shared state fails with cluster_unavailable at once while Redis is down, and works again once it is back', async () => {
    const client = await replica()
    const prefix = `t-${newId()}:`
    const workspaces = new SharedWorkspaceStore(client, prefix)
    const concurrency = new SharedUserConcurrency(client, prefix, 4, 60_000, newId())
    const id = newId()
    await workspaces.apply(id, 'runtime', alice, { put: { a: ref() }, remove: [] }, LIMITS)
    await redis.stop()
    try {
      await assert.rejects(workspaces.get(id, alice), (error) => isWardenError(error, WARDEN_ERRORS.clusterUnavailable))
      await assert.rejects(workspaces.apply(id, 'runtime', alice, { put: { b: ref() }, remove: [] }, LIMITS), (error) => isWardenError(error, WARDEN_ERRORS.clusterUnavailable))
      await assert.rejects(Promise.resolve(concurrency.enter(alice)), (error) => isWardenError(error, WARDEN_ERRORS.clusterUnavailable))
    } finally {
      await redis.start()
    }
    // the client reconnects by itself; the restarted Redis is empty (nothing persisted in this test)
    let answered = false
    for (let attempt = 0; attempt < 100 && !answered; attempt++) {
      answered = await workspaces.get(id, alice).then(() => true, () => false)
      if (!answered) await sleep(50)
    }
    assert.ok(answered, 'the client reconnected')
    assert.equal(await workspaces.get(id, alice), null)
    const leave = await concurrency.enter(alice)
    leave()
  })
})

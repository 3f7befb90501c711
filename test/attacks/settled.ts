import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, type RunningServer } from '../helpers/server.ts'
import { jailProcesses, leftoverProcesses, type Json } from './helpers.ts'

export async function health (server: RunningServer): Promise<Json> {
  return await (await api(server, '/health')).json() as Json
}

/**
 * Wait until nothing is in flight (no busy, waiting or starting worker, no slot spawning or cleaning,
 * no live worker, no process of a finished run left on the host), then check that /health matches what
 * the host sees: no zygote restarted since `before`, no slot retired, every occupied slot holding a warm
 * worker, and as many warm workers as jailed processes. The answer is the settled /health.
 */
export async function assertSettled (server: RunningServer, before: Json, settleMs = 20_000): Promise<Json> {
  let after: Json = {}
  const deadline = Date.now() + settleMs
  for (;;) {
    after = await health(server)
    const { pool, live } = after
    const settled = pool.busy === 0 && pool.waiting === 0 && pool.starting === 0 && (pool.slots.spawning ?? 0) === 0 &&
      (pool.slots.cleaning ?? 0) === 0 && (live?.workers ?? 0) === 0
    // a worker that went back to the pool is warm a moment after its slot is occupied again
    const balanced = (pool.slots.occupied ?? 0) === pool.warm && warmWorkerProcesses(server).length === pool.warm
    if (settled && balanced && leftoverProcesses(server).length === 0) break
    if (settled && Date.now() > deadline) break // the checks below say what is wrong
    if (Date.now() > deadline) assert.fail(`the server did not settle: ${JSON.stringify({ pool, live })}; leftovers ${JSON.stringify(leftoverProcesses(server))}`)
    await sleep(100)
  }
  assert.equal(after.pool.jails_started, before.pool.jails_started, 'a zygote exited')
  assert.equal(after.pool.zygotes_alive, after.pool.zygotes)
  assert.equal(after.pool.slots.dead ?? 0, 0, `slots were retired: ${JSON.stringify(after.pool.slots)}`)
  assert.equal(after.pool.slots.occupied ?? 0, after.pool.warm, `every occupied slot holds a warm worker: ${JSON.stringify(after.pool)}`)
  const warmWorkers = warmWorkerProcesses(server)
  assert.equal(leftoverProcesses(server).length, 0, `processes of finished runs are left: ${JSON.stringify(leftoverProcesses(server))}`)
  assert.equal(warmWorkers.length, after.pool.warm, `/health counts ${after.pool.warm} warm workers, the host sees ${warmWorkers.length}`)
  return after
}

function warmWorkerProcesses (server: RunningServer): ReturnType<typeof jailProcesses> {
  return jailProcesses(server).filter((process) => process.cgroup.split('/').at(-1) !== 'zygote')
}

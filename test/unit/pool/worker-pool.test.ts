import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { test } from 'node:test'

interface Report { spawnCalls: number, spawnCallsBeforeFree: number, ticks: number, outcome: string }

// Each case runs in a child process: the bug these guard against (a failed spawn retried at once, by
// the pool, in microtasks) starves timers, which would hang this runner rather than fail a test.
function runPool (mode: 'no-free-slot' | 'failing'): Report {
  const fixture = path.join(import.meta.dirname, 'fixtures', 'pool-under-stress.ts')
  const child = spawnSync(process.execPath, ['--import', 'tsx', fixture, mode], { encoding: 'utf8', timeout: 15_000 })
  assert.equal(child.signal, null, `the pool finished on its own instead of spinning\n${child.stderr}`)
  return JSON.parse(child.stdout) as Report
}

test('a spawn that finds no free slot waits for one instead of failing, then succeeds', () => {
  const report = runPool('no-free-slot')
  assert.equal(report.spawnCallsBeforeFree, 0, 'no fork is attempted while every slot is busy')
  assert.equal(report.outcome, 'acquired')
  assert.equal(report.spawnCalls, 1)
})

test('failing spawns are retried with a pause, so the event loop keeps running', () => {
  const report = runPool('failing')
  assert.ok(report.ticks >= 50, `the event loop ran (${report.ticks} ticks of 10 ms in 1 s)`)
  assert.ok(report.spawnCalls <= 10, `spawns were retried ${report.spawnCalls} times in 1 s, not in a tight loop`)
  assert.match(report.outcome, /No worker became free within 1 s/)
})

test('warm workers of a zygote that dies stop counting as warm at once, and the pool refills from its replacement', async () => {
  const { pino } = await import('pino')
  const { WorkerPool } = await import('../../../src/pool/worker-pool.ts')
  const { ZygoteSet } = await import('../../../src/pool/zygotes.ts')
  type Fake = { name: string, isAlive: boolean, freeSlots: number, die: () => void, exited: Promise<void>, spawned: number }
  const starts: Fake[] = []
  const makeZygote = (index: number) => {
    let die = () => {}
    const exited = new Promise<void>((resolve) => { die = resolve })
    const zygote = {
      name: `z${index}`,
      isAlive: true,
      freeSlots: 8,
      spawned: 0,
      exited,
      die: () => { zygote.isAlive = false; die() },
      waitForFreeSlot: async () => {},
      spawnWorker: async () => {
        zygote.spawned++
        const worker = { id: `z${index}/s${zygote.spawned}/1`, get isAlive () { return zygote.isAlive }, lastRunMs: null, exited: exited.then(() => ({ code: null, signal: 9, jailLost: true })), dispose: () => {} }
        return worker
      },
      slotStates: () => ({}),
      close: async () => {},
    }
    starts.push(zygote as unknown as Fake)
    return zygote
  }
  const log = pino({ level: 'silent' })
  const zygotes = await ZygoteSet.start(1, async (index) => makeZygote(index) as never, log)
  const pool = new WorkerPool({ data: zygotes }, { min: 3, max: 4, acquireTimeoutMs: 5_000, maxQueue: 4, log })
  await pool.ready()
  assert.equal(pool.stats().warm, 3)
  starts[0]?.die()
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(pool.stats().warm, 0, 'the dead zygote\'s workers are no longer counted as warm')
  assert.equal(pool.stats().zygotesAlive, 0)
  const worker = await pool.acquire() // waits for the replacement zygote (restarted after 1 s)
  assert.ok(worker.id.startsWith('z0/'))
  assert.equal(starts.length, 2, 'the zygote was replaced without a server restart')
  assert.equal(pool.stats().jailsStarted, 2)
  pool.release(worker)
  await pool.close()
  await zygotes.close()
})

test('two flavors share max: a request of one retires the other\'s warm worker when the pool is full, and steady demand keeps the room', async () => {
  const { pino } = await import('pino')
  const { WorkerPool } = await import('../../../src/pool/worker-pool.ts')
  const { ZygoteSet } = await import('../../../src/pool/zygotes.ts')
  const spawned: Record<string, number> = { data: 0, light: 0 }
  const disposed: Record<string, number> = { data: 0, light: 0 }
  const makeZygote = (flavor: 'data' | 'light') => ({
    name: flavor,
    isAlive: true,
    freeSlots: 64,
    exited: new Promise(() => {}),
    waitForFreeSlot: async () => {},
    spawnWorker: async () => {
      spawned[flavor] = (spawned[flavor] ?? 0) + 1
      return { id: `${flavor}/s${spawned[flavor]}/1`, isAlive: true, lastRunMs: null, exited: new Promise(() => {}), dispose: () => { disposed[flavor] = (disposed[flavor] ?? 0) + 1 } }
    },
    slotStates: () => ({}),
    close: async () => {},
  })
  const log = pino({ level: 'silent' })
  const data = await ZygoteSet.start(1, async () => makeZygote('data') as never, log)
  const light = await ZygoteSet.start(1, async () => makeZygote('light') as never, log)
  const pool = new WorkerPool({ data, light }, { min: 2, max: 4, acquireTimeoutMs: 5_000, maxQueue: 4, log })
  await pool.ready()
  assert.deepEqual(spawned, { data: 2, light: 2 }, 'each flavor warms min; together they fill max')

  // four light requests at once: two warm, two more by retiring the data lane's warm workers
  const workers = await Promise.all([1, 2, 3, 4].map(async () => await pool.acquire('light')))
  assert.ok(workers.every((worker) => worker.id.startsWith('light/')))
  assert.equal(disposed.data, 2)

  // a steady light load: each release is refilled with a light worker, not a data one retired again
  for (let round = 0; round < 20; round++) {
    const worker = workers.shift()
    if (worker !== undefined) pool.release(worker)
    await new Promise((resolve) => setImmediate(resolve))
    workers.push(await pool.acquire('light'))
  }
  assert.equal(spawned.data, 2, 'no data worker was forked for a light load')
  assert.equal(disposed.data, 2)
  // all four busy: a data request waits for a release, then gets a worker of its own flavor
  const dataWorker = pool.acquire('data')
  pool.release(workers.shift() as never)
  assert.match((await dataWorker).id, /^data\//)
  await pool.close()
})

test('right after a data load, light requests take the warm data workers instead of waiting for light forks; exactFlavor (the self-test) waits for its own', async () => {
  const { pino } = await import('pino')
  const { WorkerPool } = await import('../../../src/pool/worker-pool.ts')
  const { ZygoteSet } = await import('../../../src/pool/zygotes.ts')
  const makeZygote = (flavor: string) => {
    let count = 0
    return {
      name: flavor,
      isAlive: true,
      freeSlots: 64,
      exited: new Promise(() => {}),
      waitForFreeSlot: async () => {},
      // a fork takes a while, as a real one does: the refills race the next request
      spawnWorker: async () => {
        await new Promise((resolve) => setTimeout(resolve, 5))
        return { id: `${flavor}/s${++count}/1`, isAlive: true, lastRunMs: null, exited: new Promise(() => {}), dispose: () => {} }
      },
      slotStates: () => ({}),
      close: async () => {},
    }
  }
  const log = pino({ level: 'silent' })
  const turn = async (options: { exactFlavor?: boolean }) => {
    const pool = new WorkerPool({
      data: await ZygoteSet.start(1, async () => makeZygote('data') as never, log),
      light: await ZygoteSet.start(1, async () => makeZygote('light') as never, log),
    }, { min: 8, max: 8, acquireTimeoutMs: 5_000, maxQueue: 4, log })
    await pool.ready()
    for (let i = 0; i < 40; i++) {
      pool.release(await pool.acquire('data'))
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    // c=1 light requests, one after the other, as the bench's print(1) row after the Jupyter rows
    const ids: string[] = []
    const before = pool.stats().acquiredWarm
    for (let i = 0; i < 12; i++) {
      const worker = await pool.acquire('light', undefined, options)
      ids.push(worker.id)
      await new Promise((resolve) => setTimeout(resolve, 5)) // its run
      pool.release(worker)
    }
    const warm = pool.stats().acquiredWarm - before
    await pool.close()
    return { warm, ids }
  }
  const standIn = await turn({})
  assert.equal(standIn.warm, 12, `every light request found a warm worker: ${standIn.ids.join(' ')}`)
  assert.ok(standIn.ids.some((id) => id.startsWith('data/')), 'some were the data lane\'s')
  const exact = await turn({ exactFlavor: true })
  assert.ok(exact.ids.every((id) => id.startsWith('light/')), `exactFlavor got only light workers: ${exact.ids.join(' ')}`)
  assert.ok(exact.warm < 12, 'the control: without stand-ins some light requests waited for a fork')
})

test('when the load turns from one flavor to the other, the warm workers turn with it', async () => {
  const { pino } = await import('pino')
  const { WorkerPool } = await import('../../../src/pool/worker-pool.ts')
  const { ZygoteSet } = await import('../../../src/pool/zygotes.ts')
  const makeZygote = (flavor: string) => {
    let count = 0
    return {
      name: flavor,
      isAlive: true,
      freeSlots: 64,
      exited: new Promise(() => {}),
      waitForFreeSlot: async () => {},
      spawnWorker: async () => ({ id: `${flavor}/s${++count}/1`, isAlive: true, lastRunMs: null, exited: new Promise(() => {}), dispose: () => {} }),
      slotStates: () => ({}),
      close: async () => {},
    }
  }
  const log = pino({ level: 'silent' })
  const pool = new WorkerPool({
    data: await ZygoteSet.start(1, async () => makeZygote('data') as never, log),
    light: await ZygoteSet.start(1, async () => makeZygote('light') as never, log),
  }, { min: 8, max: 8, acquireTimeoutMs: 5_000, maxQueue: 4, log })
  await pool.ready()
  const settle = async () => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }
  const serve = async (flavor: 'data' | 'light', times: number) => {
    let warm = 0
    for (let i = 0; i < times; i++) {
      const before = pool.stats().acquiredWarm
      pool.release(await pool.acquire(flavor))
      if (pool.stats().acquiredWarm > before) warm++
      await settle()
    }
    return warm
  }
  await serve('light', 40)
  await serve('data', 40)
  // a burst of data requests now finds warm data workers, not light ones to retire and forks to wait for
  const before = pool.stats().acquiredWarm
  await Promise.all([1, 2, 3, 4, 5, 6].map(async () => await pool.acquire('data')))
  assert.equal(pool.stats().acquiredWarm - before, 6, 'all six found a warm worker')
  await pool.close()
})

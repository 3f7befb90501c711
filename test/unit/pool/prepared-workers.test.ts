import assert from 'node:assert/strict'
import { test } from 'node:test'
import { pino } from 'pino'
import { PreparedWorkers } from '../../../src/pool/prepared-workers.ts'
import type { Preparation, Program } from '../../../src/pool/run.ts'
import type { Worker } from '../../../src/pool/worker.ts'
import type { WorkerPool } from '../../../src/pool/worker-pool.ts'

// PreparedWorkers in front of a fake warm pool: which worker an execution gets, and how many interpreters
// are kept started per language as demand comes and goes.

interface FakeWorker { id: number, isAlive: boolean, preparedKey: string | null, disposed: boolean, exited: Promise<unknown>, prepare: (preparation: Preparation) => Promise<number>, preparedWith: Preparation | null, dispose: () => void }

function fakePool (options: { failPrepare?: boolean } = {}) {
  let next = 0
  const made: FakeWorker[] = []
  const make = (): FakeWorker => {
    const worker: FakeWorker = {
      id: ++next,
      isAlive: true,
      preparedKey: null,
      disposed: false,
      exited: new Promise(() => {}),
      preparedWith: null,
      prepare: async (preparation) => {
        await new Promise((resolve) => setTimeout(resolve, 5))
        if (options.failPrepare === true) throw new Error('the interpreter did not load')
        worker.preparedKey = preparation.start.key
        worker.preparedWith = preparation
        return 5
      },
      dispose: () => { worker.disposed = true; worker.isAlive = false },
    }
    made.push(worker)
    return worker
  }
  const pool = {
    acquired: 0,
    adopted: 0,
    released: 0,
    acquire: async () => { pool.acquired++; return make() },
    adopt: async () => { pool.adopted++; return make() },
    release: (worker: FakeWorker) => { pool.released++; worker.dispose() },
    stats: () => ({ warm: 0, busy: 0, starting: 0, waiting: 0, zygotesAlive: 1, zygotes: 1, spawned: 0, acquiredWarm: 0, acquiredCold: 0, jailsStarted: 1, slots: {} }),
    ready: async () => {},
    close: async () => {},
  }
  return { pool, made }
}

const program = (key: string): Extract<Program, { runner: 'steps' }> => ({
  runner: 'steps',
  sourceFile: 'main.x',
  steps: [{ name: 'run', argv: ['x', '{source}'] }],
  prepare: { key, argv: ['x'], handoff: 'job' },
})

const settle = async () => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 10)) }
const log = pino({ level: 'silent' })

function prepared (workers: PreparedWorkers): Record<string, number> {
  return workers.stats().prepared ?? {}
}

test('the first execution of a language takes a plain worker and starts preparing one; the next gets it', async () => {
  const { pool } = fakePool()
  const workers = new PreparedWorkers(pool as unknown as WorkerPool, { max: 4, idleMs: 60_000, log })
  const first = await workers.acquire(undefined, program('javascript')) as unknown as FakeWorker
  assert.equal(first.preparedKey, null)
  workers.release(first as unknown as Worker)
  await settle()
  assert.deepEqual(prepared(workers), { javascript: 1 })
  const second = await workers.acquire(undefined, program('javascript')) as unknown as FakeWorker
  assert.equal(second.preparedKey, 'javascript')
  assert.deepEqual([workers.stats().preparedHits, workers.stats().preparedMisses], [1, 1])
  assert.equal(pool.acquired, 1, 'only the first came from the plain pool')
  await workers.close()
})

test('a language without a prepared interpreter, or PREPARED_MAX=0, always takes a plain worker', async () => {
  const { pool } = fakePool()
  const workers = new PreparedWorkers(pool as unknown as WorkerPool, { max: 4, idleMs: 60_000, log })
  await workers.acquire(undefined, { runner: 'steps', sourceFile: 'main.c', steps: [{ name: 'run', argv: ['cc'] }] })
  await workers.acquire(undefined, { runner: 'python' })
  await settle()
  assert.deepEqual([pool.acquired, pool.adopted], [2, 0])
  const off = new PreparedWorkers(pool as unknown as WorkerPool, { max: 0, idleMs: 60_000, log })
  await off.acquire(undefined, program('r'))
  await settle()
  assert.deepEqual([pool.acquired, pool.adopted], [3, 0])
  assert.deepEqual(prepared(off), {})
  await workers.close()
  await off.close()
})

test('a language gets as many prepared workers as it ran at once, within the budget across languages, most recent first', async () => {
  const { pool } = fakePool()
  const workers = new PreparedWorkers(pool as unknown as WorkerPool, { max: 3, idleMs: 60_000, log })
  const running = await Promise.all([1, 2].map(async () => await workers.acquire(undefined, program('r'))))
  await settle()
  assert.deepEqual(prepared(workers), { r: 2 }, 'two ran at once')
  for (const worker of running) workers.release(worker)
  const node = await workers.acquire(undefined, program('javascript'))
  await settle()
  // javascript is the most recent: its one comes first, r keeps what is left of the budget of 3
  assert.deepEqual(prepared(workers), { r: 2, javascript: 1 })
  workers.release(node)
  const more = await Promise.all([1, 2, 3].map(async () => await workers.acquire(undefined, program('javascript'))))
  await settle()
  const now = prepared(workers)
  assert.ok((now.javascript ?? 0) + (now.r ?? 0) <= 3, `at most 3 prepared in all: ${JSON.stringify(now)}`)
  assert.equal(now.javascript, 3, 'the busy language takes the budget')
  for (const worker of more) workers.release(worker)
  await workers.close()
})

test('a language unused for idleMs keeps no prepared worker: they are disposed at the next look', async () => {
  const { pool, made } = fakePool()
  const workers = new PreparedWorkers(pool as unknown as WorkerPool, { max: 4, idleMs: 100, log })
  workers.release(await workers.acquire(undefined, program('typescript')))
  await settle()
  assert.deepEqual(prepared(workers), { typescript: 1 })
  const preparedWorker = made.find((worker) => worker.preparedKey === 'typescript') as FakeWorker
  await new Promise((resolve) => setTimeout(resolve, 150))
  workers.release(await workers.acquire(undefined, program('r')))
  await settle()
  assert.deepEqual(prepared(workers), { r: 1 })
  assert.equal(preparedWorker.disposed, true)
  await workers.close()
})

test('a worker whose interpreter does not come up is disposed, and the execution still gets a plain worker', async () => {
  const { pool, made } = fakePool({ failPrepare: true })
  const workers = new PreparedWorkers(pool as unknown as WorkerPool, { max: 2, idleMs: 60_000, log })
  const worker = await workers.acquire(undefined, program('r')) as unknown as FakeWorker
  assert.equal(worker.isAlive, true)
  await settle()
  assert.deepEqual(prepared(workers), {})
  assert.ok(made.filter((candidate) => candidate !== worker).every((candidate) => candidate.disposed), 'failed ones are disposed')
  await workers.close()
})

test('close disposes the prepared workers', async () => {
  const { pool, made } = fakePool()
  const workers = new PreparedWorkers(pool as unknown as WorkerPool, { max: 2, idleMs: 60_000, log })
  workers.release(await workers.acquire(undefined, program('javascript')))
  await settle()
  await workers.close()
  assert.ok(made.every((worker) => worker.disposed))
})

test('a worker is prepared with the language\'s preparation only, and serves only requests that make exactly that one', async () => {
  const { pool, made } = fakePool()
  const workers = new PreparedWorkers(pool as unknown as WorkerPool, { max: 4, idleMs: 60_000, log })
  // the first request's file name comes from its code (Java's public class): it must not reach any worker
  workers.release(await workers.acquire(undefined, { ...program('java'), sourceFile: 'SecretOfTheFirstUser.java' }))
  await settle()
  const preparedOne = made.find((worker) => worker.preparedKey === 'java') as FakeWorker
  assert.deepEqual(preparedOne.preparedWith, { start: { key: 'java', argv: ['x'], handoff: 'job' }, env: {} })
  assert.doesNotMatch(JSON.stringify(preparedOne.preparedWith), /Secret/)
  // another request of the language with another file name still gets it: the preparation is the language's
  const next = await workers.acquire(undefined, { ...program('java'), sourceFile: 'Main.java' }) as unknown as FakeWorker
  assert.equal(next, preparedOne)
  workers.release(next as unknown as Worker)
  await settle()
  // a preparation that carries something of a request is never handed to a request carrying something else
  const leaky = (secret: string): Program => ({ ...program('java'), prepare: { key: 'java', argv: ['x', secret], handoff: 'job' } })
  workers.release(await workers.acquire(undefined, leaky('first-user')))
  await settle()
  const other = await workers.acquire(undefined, leaky('second-user')) as unknown as FakeWorker
  assert.doesNotMatch(JSON.stringify(other.preparedWith), /first-user/)
  await workers.close()
})

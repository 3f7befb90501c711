import assert from 'node:assert/strict'
import net from 'node:net'
import { test, type TestContext } from 'node:test'
import { encodeFrame, encodeJsonMessage, FrameDecoder, FrameType } from '../../../src/pool/protocol.ts'
import type { Preparation, Run, WorkerJob } from '../../../src/pool/run.ts'
import { Worker, type SlotLink } from '../../../src/pool/worker.ts'

// One owner per worker process, by construction (worker.ts): whoever holds a worker — the pool, a prepared
// language's list, a kernel, a paused run — its first job claims it, and a job of another owner, a job after
// its single-use one, a second job of a prepared worker and a preparation after any job are refused. The
// worker's side is played over real sockets: it answers each job with S, X and the job's marker.

async function socketPair (): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  const remote = await accepted
  server.close()
  return [client, remote]
}

/** A Worker whose process is played by this test: it reports ready and completes every job it gets. */
async function playedWorker (t: TestContext): Promise<{ worker: Worker, jobs: Array<Record<string, unknown>> }> {
  const [control, controlRemote] = await socketPair()
  const [stdout, stdoutRemote] = await socketPair()
  const [stderr, stderrRemote] = await socketPair()
  const slot: SlotLink = {
    kill: () => {},
    interrupt: () => {},
    readCounters: async () => null,
    survivors: async () => 0,
    exited: new Promise(() => {}),
  }
  const worker = new Worker('w1', { control, stdout, stderr }, slot, { toWorker: 1 << 20, fromWorker: 1 << 20 })
  const jobs: Array<Record<string, unknown>> = []
  const decoder = new FrameDecoder(1 << 20)
  controlRemote.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk)) {
      if (frame.type !== FrameType.job) continue
      const job = JSON.parse(frame.payload.toString('utf8')) as Record<string, unknown>
      jobs.push(job)
      if (job.runner === 'prepare') {
        controlRemote.write(encodeJsonMessage(FrameType.prepared, { prepare_ms: 1 }))
        continue
      }
      const marker = Buffer.from(String(job.marker), 'hex')
      controlRemote.write(encodeFrame(FrameType.started))
      controlRemote.write(encodeJsonMessage(FrameType.done, { exit_code: 0, signal: null, deleted: [], notes: [], discarded: 0, marker: job.marker }))
      stdoutRemote.write(marker)
      stderrRemote.write(marker)
    }
  })
  controlRemote.write(encodeJsonMessage(FrameType.ready, { setup_ms: 1 }))
  await worker.ready
  t.after(() => { for (const socket of [control, controlRemote, stdout, stdoutRemote, stderr, stderrRemote]) socket.destroy() })
  return { worker, jobs }
}

/** Until the run is over and the worker has taken note (it frees a live worker once the run's promise settles). */
async function finished (run: Run): Promise<void> {
  await run.done
  await new Promise((resolve) => setImmediate(resolve))
}

const job = (owner: string, keep: boolean): WorkerJob => ({
  owner,
  program: { runner: 'python' },
  code: 'print(1)',
  args: [],
  inputs: [],
  cpuSeconds: 5,
  keep,
  outputs: { open: async () => null },
})

const preparation: Preparation = { start: { key: 'javascript', argv: ['node', '{dir}/prepare.js'], handoff: 'job' }, env: {} }

test('a live worker serves its first owner again, and refuses anyone else', async (t) => {
  const { worker, jobs } = await playedWorker(t)
  await finished(worker.start(job('tenant\u0000alice', true)))
  await finished(worker.start(job('tenant\u0000alice', true)))
  assert.throws(() => worker.start(job('tenant\u0000bob', true)), /belongs to another owner/)
  assert.throws(() => worker.start(job('tenant\u0000bob', false)), /belongs to another owner/)
  assert.equal(jobs.length, 2, 'a refused job reached the worker')
})

test('a single-use job is the worker\'s last, for its own owner too', async (t) => {
  const { worker, jobs } = await playedWorker(t)
  await finished(worker.start(job('tenant\u0000alice', false)))
  assert.throws(() => worker.start(job('tenant\u0000alice', false)), /already ran its one job/)
  assert.throws(() => worker.start(job('tenant\u0000bob', true)), /already ran its one job/)
  assert.equal(jobs.length, 1)
})

test('a prepared worker runs exactly one job and was prepared with nothing of it', async (t) => {
  const { worker, jobs } = await playedWorker(t)
  assert.equal(await worker.prepare(preparation), 1)
  await assert.rejects(worker.prepare(preparation), /cannot be prepared now/)
  assert.throws(() => worker.start(job('tenant\u0000alice', true)), /a prepared worker runs one job/)
  await finished(worker.start(job('tenant\u0000alice', false)))
  assert.throws(() => worker.start(job('tenant\u0000alice', false)), /already ran its one job/)
  assert.deepEqual(jobs[0], { runner: 'prepare', env: {}, prepare: { key: 'javascript', argv: ['node', '{dir}/prepare.js'], handoff: 'job' } })
  assert.equal(jobs.length, 2)
})

test('a worker that ran a job is never prepared', async (t) => {
  const { worker, jobs } = await playedWorker(t)
  await finished(worker.start(job('tenant\u0000alice', true)))
  await assert.rejects(worker.prepare(preparation), /cannot be prepared now/)
  assert.equal(jobs.length, 1)
})

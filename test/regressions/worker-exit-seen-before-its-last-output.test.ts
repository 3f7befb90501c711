import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import { ownerKey } from '../../src/auth/identity.ts'
import { loadConfig } from '../../src/config.ts'
import { collectRun } from '../../src/exec/collect-run.ts'
import python from '../../src/exec/languages/python.ts'
import { startServices, type Services } from '../../src/services.ts'
import { availableDrivers } from '../helpers/server.ts'

/**
 * Issue 21: "two resumes raced on one token" answered 200 with `Sandbox exited with code 137` and no
 * stdout about 1 in 30 resumes on a loaded machine. The race was not the cause. A worker writes its
 * output, its done frame and its markers, then exits; the zygote reports the exit on another pipe, and
 * under load the server may read that report before the worker's sockets. A live worker took the report
 * as its death and disposed of the worker, and dispose destroyed the sockets at once: what the worker
 * wrote before it exited was thrown away, and the run was reported as killed.
 *
 * The order is made certain here, not left to load: the run's events are not read until the worker has
 * exited, so backpressure (src/pool/event-queue.ts) pauses the worker's sockets with the end of its
 * output and its done frame still unread. Whatever then ends the worker, the run must still read them.
 */

const NO_OUTPUTS = { open: async () => null }
const alice = { tenant: 'legacy', user: 'alice-exit-order' }
const CAPS = { max: 4, maxPerUser: 4 }
/** past the run's 1 MiB high-water mark, with the rest (and the done frame) small enough for the socket buffers */
const PRINTED_BYTES = (1 << 20) + (96 << 10)
const CODE = `import sys\nsys.stdout.write("x" * ${PRINTED_BYTES})\nsys.stdout.flush()\nprint("end")`
const JOB = { program: python.program, code: CODE, args: [], inputs: [], cpuSeconds: 30, outputs: NO_OUTPUTS }
const LIMITS = { timeoutMs: 30_000, maxStdoutBytes: 4 << 20, maxStderrBytes: 65_536 }

async function until (condition: () => boolean, what: string): Promise<void> {
  // a bound against a hang, not a measurement: the worker exits as soon as its output is buffered
  const deadline = Date.now() + 20_000
  while (!condition()) {
    assert.ok(Date.now() < deadline, `never: ${what}`)
    await sleep(10)
  }
}

for (const driver of availableDrivers()) {
  describe(`a worker's exit seen before its last output loses nothing (${driver})`, () => {
    let services: Services
    const dirs: string[] = []
    before(async () => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'warden-exit-order-data-'))
      const runDir = await mkdtemp(path.join(os.tmpdir(), 'warden-exit-order-run-'))
      dirs.push(dataDir, runDir)
      services = await startServices(loadConfig({
        AUTH: 'none',
        JAIL: driver,
        DATA_DIR: dataDir,
        RUN_DIR: runDir,
        POOL_MIN: '1',
        POOL_MAX: '2',
        JAIL_UID_BASE: String(2_000_000_000 + Math.floor(Math.random() * 100_000) * 1000),
      }), pino({ level: 'silent' }))
    })
    after(async () => {
      await services?.close()
      for (const dir of dirs) await rm(dir, { recursive: true, force: true })
    })

    test('a live worker whose last run exits before its output is read: the run reads all of it, and the worker ends as stopped, not died', { timeout: 60_000 }, async () => {
      const live = await services.live!.create(alice, 'ptc', CAPS)
      const ended: string[] = []
      live.onEnd((reason) => ended.push(reason))
      const run = live.start(JOB, { last: true })
      await until(() => !live.isAlive, 'the worker exited')
      const result = await collectRun(run, LIMITS)
      assert.equal(result.vanished, false, `the run lost its done frame: ${JSON.stringify({ failure: result.failure, signal: result.signal, stdoutBytes: result.stdout.length })}`)
      assert.equal(result.exitCode, 0)
      assert.equal(result.stdout.length, PRINTED_BYTES + 4)
      assert.equal(result.stdout.subarray(-4).toString(), 'end\n')
      await until(() => ended.length > 0, 'the live worker ended')
      assert.deepEqual(ended, ['stopped'])
    })

    test('a worker disposed of after its exit, before its run read the rest: the run still reads all of it', { timeout: 60_000 }, async () => {
      const worker = await services.pool.acquire()
      const run = worker.start({ ...JOB, owner: ownerKey(alice), keep: false })
      await until(() => !worker.isAlive, 'the worker exited')
      services.pool.release(worker)
      const result = await collectRun(run, LIMITS)
      assert.equal(result.vanished, false, `the run lost its done frame: ${JSON.stringify({ failure: result.failure, signal: result.signal, stdoutBytes: result.stdout.length })}`)
      assert.equal(result.exitCode, 0)
      assert.equal(result.stdout.length, PRINTED_BYTES + 4)
    })
  })
}

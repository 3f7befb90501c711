import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import { loadConfig } from '../../src/config.ts'
import { isWardenError, WARDEN_ERRORS } from '../../src/errors.ts'
import { collectRun } from '../../src/exec/collect-run.ts'
import python from '../../src/exec/languages/python.ts'
import type { LiveWorker } from '../../src/live/registry.ts'
import { startServices, type Services } from '../../src/services.ts'
import { availableDrivers } from '../helpers/server.ts'

/**
 * Live workers (src/live/registry.ts) in real jails: one worker runs several jobs with its interpreter
 * state kept between them, an interrupt stops a long run without losing that state, an idle worker
 * expires, another user cannot reach it, and the caps hold.
 */

const NO_OUTPUTS = { open: async () => null }
const alice = { tenant: 'legacy', user: 'alice' }
const bob = { tenant: 'legacy', user: 'bob' }
/** two per user and kind; the overall budget (MAX_LIVE_WORKERS=3) is what stops the fourth */
const CAPS = { max: 10, maxPerUser: 2 }

async function runIn (live: LiveWorker, code: string, whileRunning?: (interrupt: () => void) => Promise<void>) {
  const run = live.start({ program: python.program, code, args: [], inputs: [], cpuSeconds: 30, outputs: NO_OUTPUTS })
  const collected = collectRun(run, { timeoutMs: 20_000, maxStdoutBytes: 65_536, maxStderrBytes: 65_536 })
  await whileRunning?.(() => run.interrupt())
  const result = await collected
  return { ...result, stdout: result.stdout.toString(), stderr: result.stderr.toString() }
}

for (const driver of availableDrivers()) {
  describe(`live workers in real jails (${driver})`, () => {
    let services: Services
    const dirs: string[] = []
    before(async () => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'warden-live-data-'))
      const runDir = await mkdtemp(path.join(os.tmpdir(), 'warden-live-run-'))
      dirs.push(dataDir, runDir)
      const config = loadConfig({
        AUTH: 'none',
        JAIL: driver,
        DATA_DIR: dataDir,
        RUN_DIR: runDir,
        POOL_MIN: '1',
        POOL_MAX: '2',
        MAX_LIVE_WORKERS: '3',
        LIVE_IDLE_TIMEOUT: '1500ms',
        JAIL_UID_BASE: String(2_000_000_000 + Math.floor(Math.random() * 100_000) * 1000),
      })
      services = await startServices(config, pino({ level: 'silent' }))
    })
    after(async () => {
      await services?.close()
      for (const dir of dirs) await rm(dir, { recursive: true, force: true })
    })

    test('three runs share one interpreter; an interrupt stops a long run and keeps the state', { timeout: 60_000 }, async () => {
      const live = await services.live!.create(alice, 'kernel', CAPS)
      try {
        assert.equal((await runIn(live, 'import os\nx = 40\nopen("state.txt", "w").write("kept")')).exitCode, 0)
        const second = await runIn(live, 'x += 2\nprint(x, open("state.txt").read(), os.getpid())')
        assert.match(second.stdout, /^42 kept 1\n$/, second.stderr)
        const third = await runIn(live, 'print(x * 2)')
        assert.equal(third.stdout, '84\n')

        const interrupted = await runIn(live, 'import time\nprint("sleeping", flush=True)\ntime.sleep(30)\nprint("not reached")', async (interrupt) => {
          await sleep(500)
          interrupt()
        })
        assert.equal(interrupted.interrupted, true, JSON.stringify(interrupted))
        assert.equal(interrupted.stdout, 'sleeping\n')
        assert.match(interrupted.stderr, /KeyboardInterrupt/)
        assert.ok(interrupted.wallMs < 10_000, 'the interrupt ended the run, not its time limit')
        assert.ok(live.isAlive, 'the worker survives an interrupt')
        assert.equal((await runIn(live, 'print(x)')).stdout, '42\n', 'state kept after the interrupt')
      } finally {
        live.end('stopped')
      }
    })

    test('another user cannot reach a live worker: get and list answer as for an unknown id', { timeout: 30_000 }, async () => {
      const live = await services.live!.create(alice, 'kernel', CAPS)
      try {
        assert.equal(services.live!.get(live.id, alice), live)
        assert.equal(services.live!.get(live.id, bob), null)
        assert.equal(services.live!.get(live.id, { tenant: 'other', user: 'alice' }), null)
        assert.deepEqual(services.live!.list(bob), [])
        assert.deepEqual(services.live!.list(alice).map((worker) => worker.id), [live.id])
      } finally {
        live.end('stopped')
      }
    })

    test('an idle live worker expires, and its process is gone', { timeout: 30_000 }, async () => {
      const live = await services.live!.create(alice, 'kernel', CAPS)
      assert.equal((await runIn(live, 'print(1)')).stdout, '1\n')
      const deadline = Date.now() + 8_000
      while (live.ended === null && Date.now() < deadline) await sleep(100)
      assert.equal(live.ended, 'expired')
      assert.equal(services.live!.get(live.id, alice), null)
      assert.equal(services.live!.stats().ended.expired >= 1, true)
    })

    test('the caps hold: per user and kind, then the overall budget, with a capacity error; ending one frees its place', { timeout: 30_000 }, async () => {
      const first = await services.live!.create(alice, 'kernel', CAPS)
      const second = await services.live!.create(alice, 'kernel', CAPS)
      await assert.rejects(services.live!.create(alice, 'kernel', CAPS), (error: unknown) => isWardenError(error, WARDEN_ERRORS.liveCapacity), 'two kernels per user')
      const third = await services.live!.create(alice, 'ptc', CAPS)
      await assert.rejects(services.live!.create(bob, 'kernel', CAPS), (error: unknown) => isWardenError(error, WARDEN_ERRORS.liveCapacity), 'three in all')
      assert.deepEqual(services.live!.stats().byKind, { kernel: 2, ptc: 1 })
      first.end('stopped')
      const fourth = await services.live!.create(bob, 'kernel', CAPS)
      for (const live of [second, third, fourth]) live.end('stopped')
      assert.equal(services.live!.stats().live, 0)
    })
  })
}

import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { workdirFootprint } from '../../src/exec/inputs.ts'
import { JOB_BUDGET_BYTES } from '../../src/exec/job-budget.ts'
import { api, availableDrivers, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'

/**
 * Issue 9's property test for limits: jobs of random sizes around every cap (code and args against the
 * job budget, the number and size of args, inputs against the work directory, output files against
 * their count and size caps, stdout against its cap) each get their normal answer or a 4xx, within the
 * time limit plus a grace, and the pool is whole afterwards. Seeded, so a failure replays.
 */

const SEED = Number(process.env.LIMITS_SEED ?? Date.now() % 100_000)
const TIMEOUT_MS = 4_000
const GRACE_MS = 10_000
const LIMITS = { workdirMb: 12, maxOutputFiles: 4, maxOutputFileMb: 1, maxStdoutBytes: 32 * 1024 }
const MiB = 1024 * 1024

type Json = Record<string, any>

function random (seed: number): (max: number) => number {
  let state = seed
  return (max) => {
    state = (state * 1103515245 + 12345) % 2 ** 31
    return state % max
  }
}

/** A size near `cap`: a few bytes either side of it, or further off. */
function around (cap: number, next: (max: number) => number): number {
  const offsets = [-2, -1, 0, 1, 2, -(1 + next(4096)), 1 + next(4096)]
  return Math.max(0, cap + offsets[next(offsets.length)]!)
}

async function post (server: RunningServer, body: unknown): Promise<{ status: number, body: Json, ms: number }> {
  const started = performance.now()
  const response = await api(server, '/exec', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS + GRACE_MS),
  })
  return { status: response.status, body: await response.json() as Json, ms: performance.now() - started }
}

for (const driver of availableDrivers()) {
  describe(`every size around every cap gets its normal answer or a 4xx in time (${driver}, seed ${SEED})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    const next = random(SEED + (driver === 'nsjail' ? 1 : 0))
    before(async () => {
      server = await startServer(suite, {
        driver,
        env: {
          EXEC_TIMEOUT_MS: String(TIMEOUT_MS),
          WORKDIR_LIMIT_MB: String(LIMITS.workdirMb),
          MAX_OUTPUT_FILES: String(LIMITS.maxOutputFiles),
          MAX_OUTPUT_FILE_MB: String(LIMITS.maxOutputFileMb),
          MAX_STDOUT_BYTES: String(LIMITS.maxStdoutBytes),
          MAX_BODY_MB: '16',
          POOL_MIN: '2',
          POOL_MAX: '4',
          MAX_CONCURRENT_PER_USER: '0',
        },
      })
    })

    test('code and args around the job budget: 200 within it, 413 beyond', { timeout: 120_000 }, async () => {
      for (let round = 0; round < 6; round++) {
        const total = around(JOB_BUDGET_BYTES, next)
        const argBytes = next(2) === 0 ? 0 : 60 * 1024 * (1 + next(8))
        const args = argBytes === 0 ? [] : Array.from({ length: argBytes / (60 * 1024) }, () => 'a'.repeat(60 * 1024))
        const codeBytes = Math.max(10, total - argBytes)
        const code = `${'#'.repeat(codeBytes - 9)}\nprint(1)`
        const answer = await post(server, { lang: 'py', code, args })
        const size = Buffer.byteLength(code) + argBytes
        const where = `round ${round} (seed ${SEED}): ${size} bytes of code and args`
        if (size <= JOB_BUDGET_BYTES) {
          assert.equal(answer.status, 200, `${where}: ${JSON.stringify(answer.body).slice(0, 300)}`)
          assert.equal(answer.body.stdout, '1\n', where)
        } else {
          assert.equal(answer.status, 413, where)
          assert.equal(answer.body.error, 'payload_too_large', where)
        }
      }
    })

    test('args around their count (1024) and size (64 KiB) caps: 200 within them, 400 beyond', { timeout: 120_000 }, async () => {
      for (let round = 0; round < 4; round++) {
        const count = around(1024, next) % 1100
        const answer = await post(server, { lang: 'py', code: 'import sys\nprint(len(sys.argv) - 1)', args: Array.from({ length: count }, () => 'x') })
        if (count <= 1024) assert.equal(answer.body.stdout, `${count}\n`, `${count} args`)
        else assert.equal(answer.status, 400, `${count} args`)
        const length = around(64 * 1024, next)
        const one = await post(server, { lang: 'py', code: 'import sys\nprint(len(sys.argv[1]))', args: ['y'.repeat(length)] })
        if (length <= 64 * 1024) assert.equal(one.body.stdout, `${length}\n`, `an arg of ${length}`)
        else assert.equal(one.status, 400, `an arg of ${length}`)
      }
    })

    test('inputs around the work directory quota: 200 within it, 413 inputs_too_large beyond', { timeout: 120_000 }, async () => {
      for (let round = 0; round < 4; round++) {
        const quota = LIMITS.workdirMb * MiB
        const first = next(quota)
        const second = around(quota - (first % 4096 === 0 ? 0 : 4096 - (first % 4096)), next) - first
        if (second < 0) continue
        const a = await uploadFile(server, 'a.bin', new Uint8Array(first), 'limits-user')
        const b = await uploadFile(server, 'b.bin', new Uint8Array(second), 'limits-user')
        const answer = await post(server, {
          lang: 'py',
          code: 'import os\nprint(os.path.getsize("a.bin") + os.path.getsize("b.bin"))',
          user_id: 'limits-user',
          files: [{ id: a.fileId, storage_session_id: a.sessionId, name: 'a.bin' }, { id: b.fileId, storage_session_id: b.sessionId, name: 'b.bin' }],
        })
        const where = `inputs of ${first} + ${second} bytes, quota ${quota}`
        if (workdirFootprint([first, second]) <= quota) {
          assert.equal(answer.status, 200, `${where}: ${JSON.stringify(answer.body).slice(0, 300)}`)
          assert.equal(answer.body.stdout, `${first + second}\n`, where)
        } else {
          assert.equal(answer.status, 413, where)
          assert.equal(answer.body.error, 'inputs_too_large', where)
        }
      }
    })

    test('outputs around their count and size caps: what is within them comes back, the rest is noted', { timeout: 120_000 }, async () => {
      for (let round = 0; round < 4; round++) {
        const count = around(LIMITS.maxOutputFiles, next) % 8
        const size = around(LIMITS.maxOutputFileMb * MiB, next)
        const answer = await post(server, { lang: 'py', code: `for i in range(${count}):\n    open(f"out{i}.bin", "wb").write(b"z" * ${size})` })
        const where = `${count} outputs of ${size} bytes`
        assert.equal(answer.status, 200, where)
        const kept = size <= LIMITS.maxOutputFileMb * MiB ? Math.min(count, LIMITS.maxOutputFiles) : 0
        assert.equal(answer.body.files.length, kept, `${where}: ${JSON.stringify(answer.body).slice(0, 400)}`)
        if (kept < count) assert.match(answer.body.stderr, /not kept/, where)
      }
    })

    test('stdout around its cap: whole within it, OL beyond', { timeout: 120_000 }, async () => {
      for (let round = 0; round < 6; round++) {
        const bytes = around(LIMITS.maxStdoutBytes, next)
        const answer = await post(server, { lang: 'py', code: `import sys\nsys.stdout.write("o" * ${bytes})` })
        assert.equal(answer.status, 200)
        if (bytes <= LIMITS.maxStdoutBytes) {
          assert.equal(answer.body.status, 'ok', `${bytes} bytes`)
          assert.equal(answer.body.stdout.length, bytes)
        } else {
          assert.equal(answer.body.status, 'OL', `${bytes} bytes`)
          assert.equal(answer.body.stdout.length, LIMITS.maxStdoutBytes)
        }
      }
    })

    test('afterwards the pool is whole: nothing busy or waiting, no slot retired', async () => {
      for (let attempt = 0; ; attempt++) {
        const report = await (await api(server, '/health')).json() as Json
        if (report.pool.busy === 0 && report.pool.waiting === 0 && (report.pool.slots.cleaning ?? 0) === 0) {
          assert.equal(report.pool.slots.dead ?? 0, 0)
          assert.equal(report.status, 'ok')
          return
        }
        if (attempt > 100) assert.fail(`the pool did not settle: ${JSON.stringify(report.pool)}`)
        await sleep(100)
      }
    })
  })
}

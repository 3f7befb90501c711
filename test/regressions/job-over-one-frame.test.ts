import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * Issue 9, finding 3. The schema admitted code up to 4 MiB and args up to 64 KiB × 1024, but the worker
 * refused frames over 1 MiB: the worker died while the server waited for the job's write to drain, the
 * request never answered and its worker and the user's count were never given back. Now one budget
 * (code + args) is shared by the schema and the protocol: larger jobs get 413 before any jail work, and
 * everything admitted travels in frames the protocol accepts.
 */

const TIMEOUT_MS = 5_000
/** the time limit plus a grace: no request may take longer, whatever it contains */
const DEADLINE_MS = TIMEOUT_MS + 10_000

type Json = Record<string, any>

async function execWithin (server: RunningServer, body: unknown): Promise<{ status: number, body: Json }> {
  const response = await api(server, '/exec', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(DEADLINE_MS),
  })
  return { status: response.status, body: await response.json() as Json }
}

async function assertPoolWhole (server: RunningServer): Promise<void> {
  let report: Json = {}
  for (let attempt = 0; attempt < 50; attempt++) {
    report = await (await api(server, '/health')).json() as Json
    if (report.pool.busy === 0 && report.pool.waiting === 0) return
    await sleep(100)
  }
  assert.fail(`the pool did not get its workers back: ${JSON.stringify(report.pool)}`)
}

for (const driver of availableDrivers()) {
  describe(`jobs larger than one protocol frame (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startServer(suite, { driver, env: { EXEC_TIMEOUT_MS: String(TIMEOUT_MS), POOL_MIN: '2', POOL_MAX: '3', MAX_CONCURRENT_PER_USER: '0' } })
    })

    it('3 MiB of Python code runs and answers normally', async () => {
      const filler = `# ${'x'.repeat(1022)}\n`.repeat(3 * 1024)
      const { status, body } = await execWithin(server, { lang: 'py', code: `${filler}print('big code ran')` })
      assert.equal(status, 200, JSON.stringify(body).slice(0, 500))
      assert.equal(body.stdout, 'big code ran\n')
      await assertPoolWhole(server)
    })

    it('300 KiB of Bash (more than one argv string may hold) runs and answers normally', async () => {
      const filler = `# ${'y'.repeat(1022)}\n`.repeat(300)
      const { status, body } = await execWithin(server, { lang: 'bash', code: `${filler}echo big bash ran` })
      assert.equal(status, 200, JSON.stringify(body).slice(0, 500))
      assert.equal(body.stdout, 'big bash ran\n')
    })

    it('24 args of 60 KiB each (1.4 MiB) reach the program as argv', async () => {
      const args = Array.from({ length: 24 }, (_, index) => String.fromCharCode(97 + index).repeat(60 * 1024))
      const { status, body } = await execWithin(server, { lang: 'py', code: 'import sys\nprint(len(sys.argv) - 1, sum(map(len, sys.argv[1:])))', args })
      assert.equal(status, 200, JSON.stringify(body).slice(0, 500))
      assert.equal(body.stdout, `24 ${24 * 60 * 1024}\n`)
      await assertPoolWhole(server)
    })

    it('code over the job budget answers 413 payload_too_large at once, and the pool is whole', async () => {
      const { status, body } = await execWithin(server, { lang: 'py', code: 'x'.repeat(5 * 1024 * 1024) })
      assert.equal(status, 413, JSON.stringify(body).slice(0, 500))
      assert.equal(body.error, 'payload_too_large')
      assert.match(body.message, /4 MiB/)
      await assertPoolWhole(server)
    })

    it('code and args that together exceed the budget answer 413 payload_too_large', async () => {
      const args = Array.from({ length: 40 }, () => 'z'.repeat(60 * 1024))
      const { status, body } = await execWithin(server, { lang: 'py', code: 'x = 1\n'.repeat(300_000), args })
      assert.equal(status, 413, JSON.stringify(body).slice(0, 500))
      assert.equal(body.error, 'payload_too_large')
      await assertPoolWhole(server)
    })
  })
}

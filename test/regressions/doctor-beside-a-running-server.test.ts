import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe } from 'node:test'
import { promisify } from 'node:util'
import { availableDrivers, exec, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * Found by the deployment guest test: `docker exec warden /app/bin/warden doctor` (README) ran its canary
 * jail in the server's RUN_DIR, which the image sets, and removed that directory when done: the server's
 * channel sockets went with it, and every worker after that failed to connect (FileNotFoundError) until
 * the pool answered 429. The doctor now keeps to a runtime directory of its own.
 */

const run = promisify(execFile)
const WARDEN = path.resolve(import.meta.dirname, '..', '..', 'bin', 'warden')

describe('warden doctor beside a running server with the same RUN_DIR', () => {
  let server: RunningServer
  let runDir: string
  const suite = suiteContext()
  before(async () => {
    const parent = await mkdtemp(path.join(os.tmpdir(), 'warden-shared-'))
    await chmod(parent, 0o755) // the jail's uid must reach the runtime directory below it
    runDir = path.join(parent, 'run')
    server = await startServer(suite, { driver: availableDrivers()[0] ?? 'bwrap', env: { RUN_DIR: runDir, POOL_MIN: '1' } })
  })
  after(async () => { await rm(path.dirname(runDir), { recursive: true, force: true }) })

  it('passes its canary and leaves the server\'s runtime files and workers alone', async () => {
    const { stdout } = await run(WARDEN, ['doctor'], { env: { ...process.env, RUN_DIR: runDir, JAIL: server.driver }, timeout: 120_000 })
    assert.match(stdout, /^✓ canary execution/m)
    assert.ok(existsSync(path.join(runDir, 'channels', 'z0', 'sock')), 'the server\'s channel socket is still there')
    for (let round = 0; round < 3; round++) {
      const { status, body } = await exec(server, { lang: 'py', code: `print(${round} * 7)` })
      assert.equal(status, 200, JSON.stringify(body))
      assert.equal(body.stdout, `${round * 7}\n`)
    }
  })
})

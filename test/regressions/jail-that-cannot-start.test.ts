import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { api, availableDrivers, exec, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * Deployment issue, F3. In Docker (no CAP_SYS_ADMIN) bubblewrap's jail could not start, and the server
 * died of an unhandled ECONNRESET on the jail's pipe instead of saying so. A jail that cannot start must
 * never crash the server: an explicit JAIL names the reason and exits cleanly; JAIL=auto falls back to
 * the driver that starts and says so on /health and in the doctor. Fake drivers that run (`--help`,
 * `--version`) but die when asked for a jail stand for a host that refuses them.
 */

const run = promisify(execFile)
const WARDEN = path.resolve(import.meta.dirname, '..', '..', 'bin', 'warden')
const REPO = path.resolve(import.meta.dirname, '..', '..')

let fakes: string
before(async () => {
  fakes = await mkdtemp(path.join(os.tmpdir(), 'warden-fake-drivers-'))
  await chmod(fakes, 0o755)
  // answers the driver probes like the real binaries, then fails the jail as a refusing host would
  const fake = (probe: string, answer: string) => [
    '#!/bin/sh',
    `if [ "$1" = ${probe} ]; then echo '${answer}'; exit 0; fi`,
    'echo "clone(CLONE_NEWUSER) failed: Operation not permitted" >&2',
    'exit 1',
  ].join('\n') + '\n'
  await writeFile(path.join(fakes, 'nsjail'), fake('--help', 'Usage: nsjail [options] -- path_to_command [args]'), { mode: 0o755 })
  await writeFile(path.join(fakes, 'bwrap'), fake('--version', 'bubblewrap 0.8.0'), { mode: 0o755 })
})
after(async () => { await rm(fakes, { recursive: true, force: true }) })

/** Start the server as an operator would and collect how it ended. */
async function startExpectingRefusal (env: Record<string, string>): Promise<{ code: number, stderr: string }> {
  const failure = await run(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: REPO,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', CODE_API_KEY: 'k', DATA_DIR: path.join(fakes, 'data'), POOL_MIN: '1', POOL_MAX: '2', ...env },
    timeout: 120_000,
  }).then(() => null, (error: { code: number, stderr: string }) => error)
  assert.ok(failure !== null, 'the server started with a jail that cannot start')
  return failure
}

test('JAIL=bwrap whose jail dies before its id maps are written: a clean refusal naming bwrap, no unhandled pipe error', async () => {
  const { code, stderr } = await startExpectingRefusal({ JAIL: 'bwrap', BWRAP_PATH: path.join(fakes, 'bwrap') })
  assert.equal(code, 1)
  assert.match(stderr, /^warden: the jail did not start: bwrap could not start a jail: /m)
  assert.doesNotMatch(stderr, /ECONNRESET|EPIPE|Unhandled|failed to start:|\n\s+at /, 'a crash, not a refusal')
})

test('JAIL=nsjail that the host refuses: a clean refusal naming nsjail', async () => {
  const { code, stderr } = await startExpectingRefusal({ JAIL: 'nsjail', NSJAIL_PATH: path.join(fakes, 'nsjail') })
  assert.equal(code, 1)
  assert.match(stderr, /^warden: the jail did not start: nsjail could not start a jail: the zygote exited \(code 1/m)
})

test('JAIL=auto where no driver starts a jail names the reason of each', async () => {
  const { stderr } = await startExpectingRefusal({ JAIL: 'auto', NSJAIL_PATH: path.join(fakes, 'nsjail'), BWRAP_PATH: path.join(fakes, 'bwrap') })
  assert.match(stderr, /nsjail could not start a jail: .*; bwrap could not start a jail: /)
})

test('JAIL=auto with STRICT=true refuses to fall back', async () => {
  const { stderr } = await startExpectingRefusal({ JAIL: 'auto', STRICT: 'true', NSJAIL_PATH: path.join(fakes, 'nsjail') })
  assert.match(stderr, /nsjail could not start a jail: .*refused because STRICT=true/)
})

if (availableDrivers().includes('bwrap')) {
  describe('JAIL=auto where nsjail runs but cannot start a jail', () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startServer(suite, { driver: 'bwrap', env: { JAIL: 'auto', NSJAIL_PATH: path.join(fakes, 'nsjail') } })
    })

    it('falls back to bubblewrap, runs code, and /health says why it is degraded', async () => {
      const { status, body } = await exec(server, { lang: 'py', code: 'print(6*7)' })
      assert.equal(status, 200)
      assert.equal(body.stdout, '42\n')
      const health = await (await api(server, '/health')).json() as { status: string, jail: { driver: string }, warnings: string[] }
      assert.equal(health.jail.driver, 'bwrap')
      assert.equal(health.status, 'degraded')
      assert.ok(health.warnings.some((warning) => /^nsjail could not start a jail: .*; using bwrap instead$/.test(warning)), JSON.stringify(health.warnings))
    })

    it('the doctor says the same and still passes its canary', async () => {
      const { stdout } = await run(WARDEN, ['doctor'], { env: { ...process.env, JAIL: 'auto', NSJAIL_PATH: path.join(fakes, 'nsjail') }, timeout: 120_000 })
      assert.match(stdout, /^! jail start: nsjail could not start a jail: .*; bwrap is used instead/m)
      assert.match(stdout, /^✓ canary execution: \d+ checks passed in a real bwrap jail/m)
    })
  })
}

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { WARDEN_ERRORS, WardenError } from '../../src/errors.ts'
import { JOB_BUDGET_BYTES } from '../../src/exec/job-budget.ts'
import bash from '../../src/exec/languages/bash.ts'
import python from '../../src/exec/languages/python.ts'
import { newId } from '../../src/storage/ids.ts'
import { authed, inProcessApp, type InProcessApp } from '../helpers/app.ts'

/**
 * POST /exec in process (test/helpers/app.ts): the real routes, hooks, schemas and error boundary over
 * fake workers and an in-memory store. Every error answer is checked for its status and code.
 */

type Json = Record<string, any>

async function exec (harness: InProcessApp, body: unknown, headers: Record<string, string> = {}) {
  const response = await harness.app.inject({
    method: 'POST',
    url: '/v1/exec',
    headers: authed({ 'content-type': 'application/json', ...headers }),
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: response.statusCode, body: response.json() as Json, headers: response.headers }
}

function assertError (answer: { status: number, body: Json }, status: number, code: string): void {
  assert.equal(answer.status, status, JSON.stringify(answer.body))
  assert.equal(answer.body.error, code)
  assert.equal(typeof answer.body.message, 'string')
  assert.ok(answer.body.message.length > 0)
}

describe('POST /exec in process', () => {
  let harness: InProcessApp
  before(async () => { harness = await inProcessApp() })
  after(async () => { await harness.close() })

  test('a run answers 200 with its stdout, a 21-character session id and the result fields', async () => {
    const answer = await exec(harness, { lang: 'py', code: 'print("hi")' })
    assert.equal(answer.status, 200)
    assert.equal(answer.body.stdout, 'hi\n')
    assert.match(answer.body.session_id, /^[A-Za-z0-9_-]{21}$/)
    assert.equal(answer.body.status, 'ok')
    assert.equal(answer.headers['x-codeapi-execution-profile'], 'default')
  })

  test('the wire is mapped once: lang to a language, args to argv, a timeout capped by the server', async () => {
    await exec(harness, { lang: 'sh', code: 'echo $1', args: ['a', 'b'], timeout: 10 ** 9 })
    const job = harness.workers.at(-1)?.jobs[0]
    assert.deepEqual(job?.program, bash.program)
    assert.deepEqual(job?.args, ['a', 'b'])
    assert.equal(job?.keep, false)
    await exec(harness, { lang: 'Python3', code: 'print("x")' })
    assert.deepEqual(harness.workers.at(-1)?.jobs[0]?.program, python.program)
  })

  test('no key answers 401 unauthorized; a wrong key too', async () => {
    const none = await harness.app.inject({ method: 'POST', url: '/exec', headers: { 'content-type': 'application/json' }, payload: '{}' })
    assertError({ status: none.statusCode, body: none.json() }, 401, 'unauthorized')
    assertError(await exec(harness, { lang: 'py', code: '' }, { 'x-api-key': 'wrong' }), 401, 'unauthorized')
  })

  test('bodies that are not JSON objects answer 400 or 415', async () => {
    assertError(await exec(harness, '{"lang":'), 400, 'invalid_request')
    assertError(await exec(harness, ''), 400, 'invalid_request')
    assertError(await exec(harness, '[1]'), 400, 'invalid_request')
    const text = await harness.app.inject({ method: 'POST', url: '/exec', headers: authed({ 'content-type': 'text/plain' }), payload: 'print(1)' })
    assertError({ status: text.statusCode, body: text.json() }, 415, 'unsupported_media_type')
  })

  test('missing or mistyped fields answer 400 invalid_request naming the field', async () => {
    const missing = await exec(harness, { code: 'print(1)' })
    assertError(missing, 400, 'invalid_request')
    assert.match(missing.body.message, /lang/)
    assertError(await exec(harness, { lang: 'py' }), 400, 'invalid_request')
    assertError(await exec(harness, { lang: 'py', code: 'x', args: 'a' }), 400, 'invalid_request')
    assertError(await exec(harness, { lang: 'py', code: 'x', args: ['a\u0000'] }), 400, 'invalid_request')
    assertError(await exec(harness, { lang: 'py', code: 'x\u0000' }), 400, 'invalid_request')
    assertError(await exec(harness, { lang: 'py', code: 'x', timeout: -1 }), 400, 'invalid_request')
    assertError(await exec(harness, { lang: 'py', code: 'x', args: Array.from({ length: 1025 }, () => 'a') }), 400, 'invalid_request')
  })

  test('an unknown language answers 400 unsupported_language listing what runs', async () => {
    const answer = await exec(harness, { lang: 'cobol', code: 'x' })
    assertError(answer, 400, 'unsupported_language')
    assert.match(answer.body.message, /py/)
  })

  test('a known language whose runtime is not installed answers 400 unsupported_language naming what is missing', async () => {
    const missing = await inProcessApp({ languages: { available: [python], missing: [{ language: bash, executables: ['/usr/bin/bash'] }] } })
    try {
      const answer = await exec(missing, { lang: 'bash', code: 'echo' })
      assertError(answer, 400, 'unsupported_language')
      assert.match(answer.body.message, /\/usr\/bin\/bash is missing \(Debian package: bash\)/)
    } finally {
      await missing.close()
    }
  })

  test('code and args over the job budget answer 413 payload_too_large before any worker is taken', async () => {
    const before = harness.workers.length
    assertError(await exec(harness, { lang: 'py', code: 'x'.repeat(JOB_BUDGET_BYTES + 1) }), 413, 'payload_too_large')
    assert.equal(harness.workers.length, before)
  })

  test('input files: a bad id is 400, an unknown one 404, another user\'s 404, a clash of names 400, too much 413', async () => {
    const sessionId = newId()
    const ref = (id: string, name: string, sid = sessionId) => ({ id, storage_session_id: sid, name })
    assertError(await exec(harness, { lang: 'py', code: 'x', files: [ref('short', 'a')] }), 400, 'invalid_request')
    assertError(await exec(harness, { lang: 'py', code: 'x', files: [ref(newId(), 'a')] }), 404, 'file_not_found')
    const writer = await harness.store.create({ storageSessionId: sessionId, name: 'mine.txt', kind: 'user', owner: { tenant: 'legacy', user: 'alice' } }, 1000)
    await writer.write(Buffer.from('x'.repeat(800)))
    const file = await writer.commit()
    assertError(await exec(harness, { lang: 'py', code: 'x', user_id: 'bob', files: [ref(file.id, 'a')] }), 404, 'file_not_found')
    assertError(await exec(harness, { lang: 'py', code: 'x', user_id: 'alice', files: [ref(file.id, '../a')] }), 400, 'invalid_file_name')
    assertError(await exec(harness, { lang: 'py', code: 'x', user_id: 'alice', files: [ref(file.id, 'a'), ref(file.id, 'a/b')] }), 400, 'invalid_file_name')
    const small = await inProcessApp({ env: { WORKDIR_LIMIT_MB: '1' } })
    try {
      const big = await small.store.create({ storageSessionId: sessionId, name: 'big.bin', kind: 'user', owner: { tenant: 'legacy', user: 'alice' } }, 2 << 20)
      await big.write(Buffer.alloc((1 << 20) + 1))
      const stored = await big.commit()
      assertError(await exec(small, { lang: 'py', code: 'x', user_id: 'alice', files: [ref(stored.id, 'big.bin')] }), 413, 'inputs_too_large')
      assert.equal(small.workers.length, 0, 'no worker was taken for a refused request')
    } finally {
      await small.close()
    }
    const ok = await exec(harness, { lang: 'py', code: 'print("in")', user_id: 'alice', files: [ref(file.id, 'data/in.txt')] })
    assert.equal(ok.status, 200)
    assert.deepEqual(harness.workers.at(-1)?.jobs[0]?.inputs.map((input) => [input.name, input.size]), [['data/in.txt', 800]])
  })

  test('a pool with no free worker answers 429 rate_limited with Retry-After; a lost jail 503; while draining 503 shutting_down', async () => {
    const refusing = (error: Error) => inProcessApp({ workers: { acquire: async () => { throw error }, release: () => {} } })
    const busy = await refusing(new WardenError(WARDEN_ERRORS.poolBusy, 'All 8 workers are busy.', { retryAfterSeconds: 7 }))
    const limited = await exec(busy, { lang: 'py', code: 'x' })
    assertError(limited, 429, 'rate_limited')
    assert.equal(limited.body.retry_after_seconds, 7)
    assert.equal(limited.headers['retry-after'], '7')
    await busy.close()
    const lost = await refusing(new WardenError(WARDEN_ERRORS.jailUnavailable, 'no jail is running; see /health'))
    assertError(await exec(lost, { lang: 'py', code: 'x' }), 503, 'jail_unavailable')
    lost.state.draining = true
    assertError(await exec(lost, { lang: 'py', code: 'x' }), 503, 'shutting_down')
    await lost.close()
  })

  test('one user over MAX_CONCURRENT_PER_USER answers 429 while others still run', async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => { release = resolve })
    const capped = await inProcessApp({ env: { MAX_CONCURRENT_PER_USER: '1' }, behave: async () => { await gate; return { stdout: 'done\n' } } })
    try {
      const first = exec(capped, { lang: 'py', code: 'x', user_id: 'alice' })
      await new Promise((resolve) => setTimeout(resolve, 20))
      assertError(await exec(capped, { lang: 'py', code: 'x', user_id: 'alice' }), 429, 'rate_limited')
      const other = exec(capped, { lang: 'py', code: 'x', user_id: 'bob' })
      release()
      assert.equal((await first).status, 200)
      assert.equal((await other).status, 200)
    } finally {
      await capped.close()
    }
  })

  test('before the self-test passed every execution answers 503 jail_unavailable', async () => {
    const starting = await inProcessApp()
    starting.state.ready = false
    assertError(await exec(starting, { lang: 'py', code: 'x' }), 503, 'jail_unavailable')
    await starting.close()
  })

  test('the execution profile header: both profiles served and echoed; one the server does not serve answers 409; garbage 400', async () => {
    const stateful = await exec(harness, { lang: 'py', code: 'print("s")', runtime_session_hint: 'v2:user:abc' }, { 'x-codeapi-expected-profile': 'stateful' })
    assert.equal(stateful.status, 200)
    assert.equal(stateful.headers['x-codeapi-execution-profile'], 'stateful')
    assert.equal(stateful.body.runtime_status, 'new')
    assertError(await exec(harness, { lang: 'py', code: 'x' }, { 'x-codeapi-expected-profile': 'turbo' }), 400, 'invalid_execution_profile')
    const plain = await exec(harness, { lang: 'py', code: 'print("d")' }, { 'x-codeapi-expected-profile': 'default' })
    assert.equal(plain.headers['x-codeapi-execution-profile'], 'default')
    const defaultOnly = await inProcessApp({ env: { PROFILES: 'default' } })
    try {
      const refused = await exec(defaultOnly, { lang: 'py', code: 'x' }, { 'x-codeapi-expected-profile': 'stateful' })
      assertError(refused, 409, 'execution_profile_mismatch')
      assert.equal(refused.body.expected_profile, 'stateful')
      assert.equal(refused.body.actual_profile, 'default')
      assert.equal(refused.headers['x-codeapi-execution-profile'], 'default')
    } finally {
      await defaultOnly.close()
    }
  })

  test('outputs of a run are stored and returned; a failed run keeps none and says so; an OOM kill is explained', async () => {
    const outputs = await inProcessApp({
      behave: (job) => job.code === 'ok'
        ? { files: [{ name: 'plots/a.png', data: 'PNG' }] }
        : job.code === 'fail' ? { exitCode: 1, stderr: 'Traceback\n', files: [{ name: 'x.txt', data: 'x' }] } : { vanish: true, oomKills: 1 },
    })
    try {
      const ok = await exec(outputs, { lang: 'py', code: 'ok' })
      assert.deepEqual(ok.body.files.map((file: Json) => [file.name, file.path, file.storage_session_id]), [['plots/a.png', '/mnt/data/plots/a.png', ok.body.session_id]])
      const failed = await exec(outputs, { lang: 'py', code: 'fail' })
      assert.equal(failed.body.status, 'error')
      assert.deepEqual(failed.body.files, [])
      assert.match(failed.body.stderr, /were not kept because the execution did not succeed/)
      const oom = await exec(outputs, { lang: 'py', code: 'oom' })
      assert.equal(oom.status, 200)
      assert.equal(oom.body.status, 'oom')
      assert.match(oom.body.stderr, /memory limit of 512 MiB/)
    } finally {
      await outputs.close()
    }
  })

  test('a run past its time limit is stopped and answers 200 timeout', async () => {
    const slow = await inProcessApp({ env: { EXEC_TIMEOUT_MS: '200' }, behave: () => ({ hang: true, stdout: 'started\n' }) })
    try {
      const answer = await exec(slow, { lang: 'py', code: 'x' })
      assert.equal(answer.status, 200)
      assert.equal(answer.body.status, 'timeout')
      assert.equal(answer.body.stdout, 'started\n')
      assert.match(answer.body.stderr, /time limit of 0\.2 s/)
    } finally {
      await slow.close()
    }
  })
})

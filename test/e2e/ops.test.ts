import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { closeSync, constants, existsSync, openSync } from 'node:fs'
import path from 'node:path'
import { describe, test } from 'node:test'
import { promisify } from 'node:util'
import { checkLanguages, LANGUAGES } from '../../src/exec/languages/index.ts'
import { api, availableDrivers, exec, startServer, type RunningServer } from '../helpers/server.ts'

const run = promisify(execFile)
const WARDEN = path.resolve(import.meta.dirname, '..', '..', 'bin', 'warden')

/** What the doctor's host-sysctls line should say here: a warning only in a container whose root can write /proc/sys. */
function hostSysctlsMark (): '✓' | '!' {
  const inContainer = existsSync('/.dockerenv') || existsSync('/run/.containerenv') || process.env.KUBERNETES_SERVICE_HOST !== undefined
  if (!inContainer) return '✓'
  try {
    closeSync(openSync('/proc/sys/kernel/core_pattern', constants.O_WRONLY))
    return '!'
  } catch {
    return '✓'
  }
}

function metricValue (text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}${labels} `) || (labels === '' && candidate.startsWith(`${name} `)))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

async function scrape (server: RunningServer): Promise<string> {
  const response = await fetch(`${server.baseUrl}/metrics`)
  assert.equal(response.status, 200)
  assert.match(response.headers.get('content-type') ?? '', /text\/plain/)
  return await response.text()
}

async function upload (server: RunningServer, text: string): Promise<{ sid: string, fid: string }> {
  const form = new FormData()
  form.append('file', new Blob([text]), 'm.txt')
  const body = await (await api(server, '/upload', { method: 'POST', body: form })).json() as { storage_session_id: string, files: Array<{ fileId: string }> }
  return { sid: body.storage_session_id, fid: body.files[0]?.fileId ?? '' }
}

for (const driver of availableDrivers()) {
  describe(`operations on ${driver}`, () => {
    test('/metrics counters move with executions, outcomes, phases, uploads and downloads', async (t) => {
      const server = await startServer(t, { driver, env: { EXEC_TIMEOUT_MS: '2000' } })
      const started = Date.now()
      const before = await scrape(server)
      await exec(server, { lang: 'py', code: 'print(1)' })
      await exec(server, { lang: 'bash', code: 'exit 3' })
      await exec(server, { lang: 'py', code: 'import time; time.sleep(10)' })
      await exec(server, { lang: 'cobol', code: 'x' })
      const { sid, fid } = await upload(server, 'metric bytes')
      await api(server, `/download/${sid}/${fid}`).then((response) => response.arrayBuffer())
      const after = await scrape(server)
      const delta = (name: string, labels = '') => metricValue(after, name, labels) - metricValue(before, name, labels)
      assert.equal(delta('warden_executions_total', '{language="python",outcome="ok"}'), 1)
      assert.equal(delta('warden_executions_total', '{language="bash",outcome="error"}'), 1)
      assert.equal(delta('warden_executions_total', '{language="python",outcome="timeout"}'), 1)
      assert.equal(delta('warden_execution_phase_seconds_count', '{phase="run"}'), 3)
      assert.equal(delta('warden_execution_duration_seconds_count', '{language="python"}'), 2)
      assert.equal(delta('warden_file_transfers_total', '{direction="upload"}'), 1)
      assert.equal(delta('warden_file_transfer_bytes_total', '{direction="download"}'), 'metric bytes'.length)
      // each execution's worker is replaced by a fresh one, off the request path: wait for the refills
      let spawned = delta('warden_worker_spawn_seconds_count')
      for (let i = 0; i < 50 && spawned < 3; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        spawned = metricValue(await scrape(server), 'warden_worker_spawn_seconds_count') - metricValue(before, 'warden_worker_spawn_seconds_count')
      }
      assert.ok(spawned >= 3, `each execution was refilled with a fresh worker (${spawned} spawns)`)
      assert.ok(metricValue(after, 'warden_pool_workers', '{state="warm"}') >= 0)
      // storage is walked at most every 5 s; within that, a scrape shows the last walk
      let stored = metricValue(after, 'warden_storage_files')
      for (let i = 0; i < 70 && stored < 1; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        stored = metricValue(await scrape(server), 'warden_storage_files')
      }
      assert.ok(stored >= 1, `stored files are counted (${stored})`)
      assert.match(after, /^warden_process_resident_memory_bytes \d+/m)
      assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`)
    })

    test('/metrics needs METRICS_TOKEN when one is set, and nothing else', async (t) => {
      const server = await startServer(t, { driver, env: { METRICS_TOKEN: 'scrape-me' } })
      assert.equal((await fetch(`${server.baseUrl}/metrics`)).status, 401)
      assert.equal((await fetch(`${server.baseUrl}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401)
      const ok = await fetch(`${server.baseUrl}/metrics`, { headers: { authorization: 'Bearer scrape-me' } })
      assert.equal(ok.status, 200)
      assert.match(await ok.text(), /warden_executions_total|warden_pool_workers/)
    })

    test('/docs/json is OpenAPI 3 listing every route with its methods, and /docs is a page', async (t) => {
      const server = await startServer(t, { driver })
      const response = await fetch(`${server.baseUrl}/docs/json`)
      assert.equal(response.status, 200)
      const doc = await response.json() as { openapi: string, paths: Record<string, Record<string, { requestBody?: unknown }>> }
      assert.match(doc.openapi, /^3\./)
      const expected: Array<[string, string]> = [
        ['/exec', 'post'], ['/upload', 'post'], ['/download/{session_id}/{file_id}', 'get'],
        ['/sessions/{session_id}/objects/{file_id}', 'get'], ['/sessions/{session_id}/objects/{file_id}', 'delete'],
        ['/files/{session_id}', 'get'], ['/files/{session_id}/{file_id}', 'delete'], ['/health', 'get'], ['/metrics', 'get'],
        ['/exec/programmatic', 'post'], ['/exec/programmatic/cancel', 'post'],
      ]
      for (const prefix of ['', '/v1']) {
        for (const [route, method] of expected) assert.ok(doc.paths[`${prefix}${route}`]?.[method] !== undefined, `${method} ${prefix}${route}`)
      }
      assert.ok(doc.paths['/v1/exec']?.post?.requestBody !== undefined, 'the exec body schema is in the document')
      const page = await fetch(`${server.baseUrl}/docs/`)
      assert.equal(page.status, 200)
      assert.match(await page.text(), /<html/i)
    })
  })
}

test('warden doctor reports this machine accurately for bubblewrap and passes its canary', async () => {
  const { stdout } = await run(WARDEN, ['doctor'], { env: { ...process.env, JAIL: 'bwrap' }, timeout: 120_000 })
  const lines = stdout.trim().split('\n')
  assert.deepEqual(lines.map((line) => line.split(':')[0]), [
    '✓ jail driver', '✓ user namespaces', '✓ cgroups', '✓ seccomp', '✓ python',
    checkLanguages().missing.length === 0 ? '✓ languages' : '! languages', '✓ disk', `${hostSysctlsMark()} host sysctls`, '✓ canary execution',
  ])
  const { stdout: bwrapVersion } = await run('bwrap', ['--version'])
  assert.ok(lines[0]?.includes(`bwrap ${bwrapVersion.trim().replace(/^bubblewrap\s*/, '')}`), lines[0])
  const v1 = existsSync('/sys/fs/cgroup/memory/cgroup.procs')
  assert.match(lines[2] ?? '', v1 ? /cgroup v1 \(memory, pids, cpu/ : /cgroup v2/)
  const { stdout: numpy } = await run('/usr/bin/python3', ['-c', 'import numpy; print(numpy.__version__)'])
  assert.ok(lines[4]?.includes(`numpy=${numpy.trim()}`), lines[4])
  const installed = checkLanguages().available.map((language) => language.id)
  assert.ok(lines[5]?.includes(`${installed.length} of ${LANGUAGES.length}: ${installed.join(', ')}`), lines[5])
  // seven isolation checks for each zygote's jail (data and light), then the memory, pids and leftover canaries
  assert.match(lines[8] ?? '', /17 checks passed in a real bwrap jail/)
})

test('warden doctor names what is missing, with the fix, and exits 1', async () => {
  const failed = await run(WARDEN, ['doctor'], { env: { ...process.env, JAIL: 'bwrap', PYTHON_PATH: '/nonexistent/python3' }, timeout: 120_000 })
    .then(() => null, (error: { code: number, stdout: string }) => error)
  assert.ok(failed !== null, 'doctor exited 0 without a python')
  assert.equal(failed.code, 1)
  assert.match(failed.stdout, /^✗ python: \/nonexistent\/python3 cannot import numpy, pandas, matplotlib.* — fix: apt-get install python3 python3-numpy/m)
  assert.match(failed.stdout, /^✗ canary execution: skipped/m)
  assert.match(failed.stdout, /^✓ jail driver: bwrap/m)
})

import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import type { RunningServer } from '../helpers/server.ts'
import { USER_ID, bashTool, codeTool, downloadAsLibreChat, injectedFromUpload, invoke, uploadAsLibreChat, type ToolResult } from '../helpers/librechat.ts'
import { PROGRAMS } from '../helpers/programs.ts'

/**
 * What `npm run test:host` checks against a Warden that is already running in the guest: natively under
 * systemd, or as the container of the README's `docker run` line (test/host/guest/*.sh start it). Not a
 * `*.test.ts` file, so `npm test` leaves it alone; run as
 *   WARDEN_URL=http://127.0.0.1:8000 WARDEN_API_KEY=… WARDEN_DRIVER=nsjail node --import tsx --test test/host/checks.ts
 * Limits are the server's defaults (the documented line sets none): MEMORY_LIMIT_MB 512, PIDS_LIMIT 128.
 * Under software emulation everything is several times slower, so deadlines are generous and no check
 * measures time.
 */

const BASE_URL = required('WARDEN_URL')
const API_KEY = required('WARDEN_API_KEY')
const DRIVER = required('WARDEN_DRIVER')
const PIDS_LIMIT = Number(process.env.WARDEN_PIDS_LIMIT ?? 128)
const TIMEOUT_MS = 300_000
/** How many languages the server must offer: 13 in the full image; unset, whatever this host installed. */
const EXPECTED_LANGUAGES = (process.env.WARDEN_LANGUAGES ?? '') === '' ? undefined : Number(process.env.WARDEN_LANGUAGES)
const server = { baseUrl: BASE_URL, apiUrl: `${BASE_URL}/v1`, apiKey: API_KEY } as RunningServer

type Json = Record<string, any>

function required (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`set ${name}`)
  return value
}

async function health (): Promise<Json> {
  const response = await fetch(`${BASE_URL}/health`, { headers: { 'x-api-key': API_KEY } })
  return { httpStatus: response.status, ...await response.json() as Json }
}

async function exec (lang: 'py' | 'bash', code: string): Promise<Json> {
  const response = await fetch(`${BASE_URL}/v1/exec`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
    body: JSON.stringify({ lang, code }),
  })
  const body = await response.json() as Json
  assert.equal(response.status, 200, JSON.stringify(body).slice(0, 2000))
  return body
}

/** A plain execution run beside an attack: it must be served, correctly, while the attack runs. */
async function besideIt<T> (attack: Promise<T>): Promise<T> {
  const [result, normal] = await Promise.all([attack, exec('py', 'import numpy\nprint(int(numpy.arange(10).sum()))')])
  assert.equal(normal.status, 'ok', JSON.stringify(normal))
  assert.equal(normal.stdout, '45\n')
  return result
}

const describeRun = (body: Json) => JSON.stringify({ status: body.status, exit_code: body.exit_code, stdout: String(body.stdout).slice(-800), stderr: String(body.stderr).slice(-800) })

let jailsStartedAtFirst: number

describe(`Warden at ${BASE_URL} (${DRIVER})`, () => {
  test('/health is ok: cgroup v2 active, the expected jail driver, the self-test passed every check; ready and live answer 200', { timeout: TIMEOUT_MS }, async (t) => {
    const report = await health()
    assert.equal(report.httpStatus, 200, JSON.stringify(report))
    assert.equal(report.status, 'ok', JSON.stringify(report.warnings))
    assert.equal(report.jail.driver, DRIVER)
    assert.equal(report.cgroups.active, true)
    assert.match(report.cgroups.description, new RegExp(`^cgroup v${process.env.WARDEN_CGROUP_VERSION ?? '2'} `))
    assert.equal(report.self_test.passed, true, JSON.stringify(report.self_test))
    assert.ok(report.self_test.checks.length >= 10 && report.self_test.checks.every((check: Json) => check.ok === true))
    for (const probe of ['ready', 'live']) assert.equal((await fetch(`${BASE_URL}/health/${probe}`)).status, 200, probe)
    jailsStartedAtFirst = report.pool.jails_started
    t.diagnostic(`${report.cgroups.description}; self-test ${report.self_test.checks.length}/${report.self_test.checks.length} in ${report.self_test.durationMs} ms`)
  })

  test('a 2 GiB allocation is stopped at the memory limit and explained, while a normal run beside it succeeds', { timeout: TIMEOUT_MS }, async () => {
    const body = await besideIt(exec('py', 'x = bytearray(2 * 1024 ** 3)\nx[::4096] = b"1" * len(x[::4096])\nprint("allocated")'))
    assert.equal(body.status, 'oom', describeRun(body))
    assert.equal(body.oom_killed, true)
    assert.match(body.stderr, /Execution exceeded the memory limit of \d+ MiB and was stopped\./)
    assert.doesNotMatch(body.stdout, /allocated/)
  })

  test(`a Python fork bomb gets EAGAIN below PIDS_LIMIT=${PIDS_LIMIT}, while a normal run beside it succeeds`, { timeout: TIMEOUT_MS }, async (t) => {
    const body = await besideIt(exec('py', [
      'import os, time',
      'forked = 0',
      'try:',
      '    while True:',
      '        if os.fork() == 0:',
      '            time.sleep(30)',
      '            os._exit(0)',
      '        forked += 1',
      'except OSError as error:',
      '    print("forked", forked, repr(error))',
    ].join('\n')))
    const match = /^forked (\d+) BlockingIOError\(11, 'Resource temporarily unavailable'\)$/m.exec(body.stdout)
    assert.ok(match, describeRun(body))
    assert.ok(Number(match[1]) < PIDS_LIMIT, `${match[1]} children with PIDS_LIMIT ${PIDS_LIMIT}`)
    t.diagnostic(`stopped after ${match[1]} children`)
  })

  test('a Bash fork bomb :(){ :|:& };: fails with "Resource temporarily unavailable" and ends with its execution', { timeout: TIMEOUT_MS }, async () => {
    const body = await besideIt(exec('bash', ':(){ :|:& };:\nsleep 2\necho bomb over'))
    assert.match(body.stderr, /Resource temporarily unavailable/, describeRun(body))
  })

  describe('the LibreChat client (agents SDK execute_code and bash_tool, LibreChat\'s upload and download)', () => {
    const runPython = async (code: string, extra: Json = {}) => await invoke(codeTool(server), { lang: 'py', code }, extra)

    before(async () => { await health() })

    test('execute_code print(): the tool content is exactly the stdout', { timeout: TIMEOUT_MS }, async () => {
      const result = await runPython('print("hello from warden")')
      assert.equal(result.content, 'stdout:\nhello from warden')
      assert.match(result.artifact.session_id ?? '', /^[A-Za-z0-9_-]{21}$/)
    })

    test('bash_tool echo: the tool content is exactly the stdout', { timeout: TIMEOUT_MS }, async () => {
      const result = await invoke(bashTool(server), { command: 'echo "$((6 * 7))"' })
      assert.equal(result.content, 'stdout:\n42')
    })

    test('a CSV uploaded LibreChat-style and injected as ToolNode does is read by pandas', { timeout: TIMEOUT_MS }, async () => {
      const ref = await uploadAsLibreChat(server, { kind: 'user', id: USER_ID, filename: 'sales.csv', bytes: 'region,units\nnorth,10\nsouth,4\nnorth,6\n', contentType: 'text/csv', userId: USER_ID })
      const result = await runPython('import pandas as pd\nprint(pd.read_csv("/mnt/data/sales.csv").groupby("region").units.sum().to_dict())',
        { _injected_files: [injectedFromUpload(ref)] })
      assert.equal(result.content, "stdout:\n{'north': 16, 'south': 4}")
    })

    test('a matplotlib PNG saved to /mnt/data is listed and downloads as a PNG', { timeout: TIMEOUT_MS }, async () => {
      const result: ToolResult = await runPython([
        'import matplotlib.pyplot as plt',
        'plt.figure(figsize=(4, 3), dpi=50); plt.plot([1, 2, 3], [1, 4, 9]); plt.savefig("/mnt/data/fig.png")',
      ].join('\n'))
      const file = (result.artifact.files ?? []).find((candidate) => candidate.name === 'fig.png')
      assert.ok(file !== undefined, JSON.stringify(result.artifact))
      const downloaded = await downloadAsLibreChat(server, file.storage_session_id ?? result.artifact.session_id ?? '', file.id)
      assert.equal(downloaded.status, 200)
      assert.deepEqual([...downloaded.bytes.subarray(1, 4)], [...Buffer.from('PNG')])
      assert.equal(downloaded.bytes.readUInt32BE(16), 200, 'width = 4 in × 50 dpi')
    })

    test('a memory bomb through execute_code shows the memory-limit sentence in the tool output, and the next call works', { timeout: TIMEOUT_MS }, async () => {
      const bomb = await runPython('chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))')
      assert.match(bomb.content, /Execution exceeded the memory limit of \d+ MiB and was stopped\./)
      assert.equal((await runPython('print(1 + 1)')).content, 'stdout:\n2')
    })
  })

  test('every language the server offers prints hello, world through the LibreChat client\'s execute_code', { timeout: TIMEOUT_MS * 4 }, async (t) => {
    const available = (await health()).languages.available as Array<{ id: string, lang: string[] }>
    if (EXPECTED_LANGUAGES !== undefined) assert.equal(available.length, EXPECTED_LANGUAGES, available.map((language) => language.id).join(', '))
    assert.ok(available.length >= 2, 'Python and Bash at least')
    for (const language of available) {
      const lang = language.lang.find((alias) => PROGRAMS[alias] !== undefined)
      assert.ok(lang !== undefined, `no test program for ${language.id} (${language.lang.join(', ')})`)
      // one after the other: a compiler gets the guest's CPUs to itself
      const result = await invoke(codeTool(server), { lang, code: PROGRAMS[lang]?.hello })
      assert.equal(result.content, 'stdout:\nhello, world', `${language.id}: ${result.content}`)
    }
    t.diagnostic(`${available.length} languages: ${available.map((language) => language.id).join(', ')}`)
  })

  test('afterwards /health is still ok and no jail had to be restarted', { timeout: TIMEOUT_MS }, async () => {
    const report = await health()
    assert.equal(report.status, 'ok', JSON.stringify(report.warnings))
    assert.equal(report.pool.jails_started, jailsStartedAtFirst, 'a zygote died and was restarted')
  })
})

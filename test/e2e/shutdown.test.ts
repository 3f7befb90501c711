import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import http from 'node:http'
import { describe, test } from 'node:test'
import { api, availableDrivers, exec, startServer, type RunningServer } from '../helpers/server.ts'

/**
 * Graceful shutdown (src/server.ts): on SIGTERM Warden stops taking requests, lets running executions
 * finish and answer (up to SHUTDOWN_TIMEOUT_MS), stops its jails and exits 0. Whatever it acknowledged
 * (uploads, outputs) is on disk and downloads byte-identical after a restart on the same data directory.
 */

const TEST_TIMEOUT_MS = 120_000
const SHUTDOWN_TIMEOUT_MS = 15_000

interface Exit { code: number | null, signal: NodeJS.Signals | null, atMs: number }

/** Resolves when the process exits, with the time since `since`. */
function exitOf (child: ChildProcess, since: number): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode, atMs: performance.now() - since })
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, atMs: performance.now() - since })))
}

async function withDeadline<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)
    })])
  } finally {
    clearTimeout(timer)
  }
}

type Attempt = { kind: 'answer', status: number, body: string } | { kind: 'error', code: string }

/** POST /v1/exec on a fresh connection (no keep-alive agent), settling within `timeoutMs` or failing. */
function execOnNewConnection (server: RunningServer, timeoutMs: number): Promise<Attempt> {
  const url = new URL(`${server.apiUrl}/exec`)
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'x-api-key': server.apiKey, connection: 'close' },
    }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => resolve({ kind: 'answer', status: response.statusCode ?? 0, body }))
      response.on('error', (error: NodeJS.ErrnoException) => resolve({ kind: 'error', code: error.code ?? error.message }))
    })
    request.setTimeout(timeoutMs, () => {
      request.destroy()
      reject(new Error(`a request sent after SIGTERM hung for ${timeoutMs} ms`))
    })
    request.on('error', (error: NodeJS.ErrnoException) => resolve({ kind: 'error', code: error.code ?? error.message }))
    request.end(JSON.stringify({ lang: 'bash', code: 'echo too-late' }))
  })
}

async function poolBusy (server: RunningServer): Promise<number> {
  const response = await fetch(`${server.apiUrl}/health`)
  return (await response.json() as { pool: { busy: number } }).pool.busy
}

async function until (what: string, predicate: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function sha256 (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/** Processes whose command line contains `marker` (jailed processes show up in the host's /proc too). */
async function processesWith (marker: string): Promise<string[]> {
  const found: string[] = []
  for (const pid of (await readdir('/proc')).filter((name) => /^\d+$/.test(name))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.includes(marker)) found.push(`${pid}: ${cmdline.replaceAll('\0', ' ')}`)
  }
  return found
}

for (const driver of availableDrivers()) {
  describe(`graceful shutdown on ${driver}`, () => {
    test('SIGTERM during three 2 s executions: each answers 200 with its output, a new connection is refused, the server exits 0 within 3 s of their answers; after a restart every output and an earlier upload download byte-identical', { timeout: TEST_TIMEOUT_MS }, async (t) => {
      // SHUTDOWN_TIMEOUT_MS well above the executions' 2 s, yet short enough to wait out when exiting is late
      const server = await startServer(t, { driver, env: { POOL_MIN: '4', POOL_MAX: '4', SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) } })

      const uploadBytes = new Uint8Array(Array.from({ length: 70_000 }, (_, i) => (i * 7919) % 256))
      const form = new FormData()
      form.append('kind', 'user')
      form.append('id', 'shutdown-user')
      form.append('file', new Blob([uploadBytes]), 'before-sigterm.bin')
      const uploadResponse = await api(server, '/upload', { method: 'POST', body: form, headers: { 'User-Id': 'shutdown-user' } })
      assert.equal(uploadResponse.status, 200)
      const upload = await uploadResponse.json() as { storage_session_id: string, files: Array<{ fileId: string }> }

      const code = (i: number) => [
        'import hashlib, os, time',
        'time.sleep(2)',
        `data = os.urandom(50_000 + ${i})`,
        `open('/mnt/data/out-${i}.bin', 'wb').write(data)`,
        'print(hashlib.sha256(data).hexdigest(), len(data))',
      ].join('\n')
      const running = [0, 1, 2].map(async (i) => await exec(server, { lang: 'py', code: code(i) }))
      await until('the three executions run', async () => await poolBusy(server) === 3)

      const sentAt = performance.now()
      const exited = exitOf(server.process, sentAt)
      assert.ok(server.process.kill('SIGTERM'))
      await new Promise((resolve) => setTimeout(resolve, 300))
      assert.equal(server.process.exitCode, null, 'the server waits for its running executions')

      const late = await execOnNewConnection(server, 5000)
      const refused = (late.kind === 'error' && late.code === 'ECONNREFUSED') ||
        (late.kind === 'answer' && late.status === 503 && (JSON.parse(late.body) as { error: string }).error === 'shutting_down')
      assert.ok(refused, `a request after SIGTERM was not refused: ${JSON.stringify(late)}`)

      const answers = await withDeadline(Promise.all(running), 15_000, 'the running executions answering')
      const answeredMs = performance.now() - sentAt
      const outputs = answers.map(({ status, body }, i) => {
        assert.equal(status, 200, `execution ${i}: ${status} ${JSON.stringify(body)}`)
        assert.equal(body.status, 'ok', JSON.stringify(body))
        const [hash, size] = (body.stdout as string).trim().split(' ')
        assert.match(hash as string, /^[0-9a-f]{64}$/)
        assert.equal(Number(size), 50_000 + i)
        assert.equal(body.files.length, 1, JSON.stringify(body.files))
        assert.equal(body.files[0].name, `out-${i}.bin`)
        return { hash, sid: body.files[0].storage_session_id as string, fid: body.files[0].id as string }
      })

      const exit = await withDeadline(exited, SHUTDOWN_TIMEOUT_MS + 10_000, 'the server exiting')
      assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, server.logs().slice(-2000))
      const shutdownLog = server.logs().split('\n').filter((line) => /shutting down|shutdown deadline|"stopped"/.test(line)).join('\n')

      await server.restart()
      for (const [i, output] of outputs.entries()) {
        const response = await api(server, `/download/${output.sid}/${output.fid}`)
        assert.equal(response.status, 200, `output ${i} after the restart`)
        assert.equal(sha256(new Uint8Array(await response.arrayBuffer())), output.hash, `output ${i} changed across the restart`)
      }
      const uploaded = await api(server, `/download/${upload.storage_session_id}/${upload.files[0]?.fileId}?kind=user&id=shutdown-user`)
      assert.equal(uploaded.status, 200, 'the upload acknowledged before SIGTERM after the restart')
      assert.equal(sha256(new Uint8Array(await uploaded.arrayBuffer())), sha256(uploadBytes))
      const after = await exec(server, { lang: 'bash', code: 'echo back' })
      assert.equal(after.body.stdout, 'back\n', 'the restarted server runs code')

      // nothing is left to wait for once the last execution has answered (its client keeps the connection alive)
      assert.ok(exit.atMs - answeredMs < 3000,
        `the server exited ${Math.round(exit.atMs - answeredMs)} ms after its last execution answered ` +
        `(SHUTDOWN_TIMEOUT_MS=${SHUTDOWN_TIMEOUT_MS}):\n${shutdownLog}`)
    })

    test('SHUTDOWN_TIMEOUT_MS=1000: SIGTERM during a 10 s execution exits 0 within 3.5 s, no jailed process survives, and the stopped request is answered 503 shutting_down (or its connection closed)', { timeout: TEST_TIMEOUT_MS }, async (t) => {
      const server = await startServer(t, { driver, env: { SHUTDOWN_TIMEOUT_MS: '1000', POOL_MIN: '2', POOL_MAX: '2' } })
      const marker = `${Math.floor(Math.random() * 1000) + 100}.${process.pid}`
      const requestStarted = performance.now()
      const running = exec(server, { lang: 'py', code: `import subprocess\nsubprocess.run(['sleep', '${marker}'])\nprint('finished')` })
        .then((answer) => ({ settledMs: performance.now() - requestStarted, answer }), (error: unknown) => ({ settledMs: performance.now() - requestStarted, error }))
      await until('the execution runs', async () => await poolBusy(server) === 1 && (await processesWith(`sleep\0${marker}`)).length > 0)

      const sentAt = performance.now()
      const exited = exitOf(server.process, sentAt)
      server.process.kill('SIGTERM')
      const exit = await withDeadline(exited, 10_000, 'the server exiting')
      assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, server.logs().slice(-2000))
      assert.ok(exit.atMs < 3500, `exited ${Math.round(exit.atMs)} ms after SIGTERM`)

      assert.deepEqual(await processesWith(`sleep\0${marker}`), [], 'a jailed process outlived the server')
      // the interrupted request settles: an answer saying why (README: 503 shutting_down), or a closed connection
      const settled = await withDeadline(running, 5000, 'the interrupted request settling')
      if ('answer' in settled) {
        assert.deepEqual({ status: settled.answer.status, error: settled.answer.body.error }, { status: 503, error: 'shutting_down' },
          `the execution stopped by the shutdown was answered ${JSON.stringify(settled.answer)}`)
      }
    })
  })
}

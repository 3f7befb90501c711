import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, availableDrivers, exec, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * The HTTP contract LibreChat relies on (spec §1–§5, §10–§12), against the real server and real jails.
 * One server per driver serves most tests; a second one, started with AUTH=none, a 1 MiB upload limit
 * and a 2 s file TTL, serves the tests of those settings.
 */

const REPO = path.resolve(import.meta.dirname, '..', '..')
const ID = /^[A-Za-z0-9_-]{21}$/
const PREFIXES = ['', '/v1'] as const

type Json = Record<string, any>

/** fetch `route` under a prefix ('' = root, '/v1'), with the server's key unless `init` sets headers itself. */
async function call (server: RunningServer, prefix: string, route: string, init: RequestInit = {}, withKey = true): Promise<Response> {
  const headers = new Headers(init.headers)
  if (withKey && !headers.has('x-api-key')) headers.set('x-api-key', server.apiKey)
  return await fetch(`${server.baseUrl}${prefix}${route}`, { ...init, headers })
}

interface Upload { sessionId: string, files: Array<{ fileId: string, filename: string }>, body: Json }

interface UploadFile { name: string, data: string | Uint8Array, type?: string, field?: string }

/** POST /upload with the fields first (LibreChat's order, spec §3.4), then the files. */
async function upload (server: RunningServer, files: UploadFile[], fields: Array<[string, string]> = [['kind', 'user'], ['id', 'user-1']], prefix = '/v1'): Promise<Upload> {
  const form = new FormData()
  for (const [name, value] of fields) form.append(name, value)
  for (const file of files) {
    form.append(file.field ?? 'file', new Blob([file.data], { type: file.type ?? 'application/octet-stream' }), file.name)
  }
  const response = await call(server, prefix, '/upload', { method: 'POST', body: form })
  const body = await response.json() as Json
  assert.equal(response.status, 200, `upload failed: ${JSON.stringify(body)}`)
  return { sessionId: body.storage_session_id, files: body.files, body }
}

async function uploadOne (server: RunningServer, name: string, data: string | Uint8Array, type?: string) {
  const { sessionId, files } = await upload(server, [{ name, data, type }])
  const file = files[0]
  assert.ok(file !== undefined)
  return { sessionId, fileId: file.fileId, name: file.filename }
}

async function download (server: RunningServer, sessionId: string, fileId: string, query = ''): Promise<Response> {
  return await api(server, `/download/${sessionId}/${fileId}${query}`)
}

async function execOk (server: RunningServer, body: Json): Promise<Json> {
  const { status, body: result } = await exec(server, body)
  assert.equal(status, 200, JSON.stringify(result))
  return result
}

function assertErrorBody (body: Json, code: string): void {
  assert.equal(body.error, code, JSON.stringify(body))
  assert.equal(typeof body.message, 'string')
  assert.ok(body.message.length > 0, 'message is empty')
}

/** The names of every stored file in a data directory, read from the metadata half (`<id>.json`). */
async function storedNames (dataDir: string): Promise<string[]> {
  const filesDir = path.join(dataDir, 'files')
  const names: string[] = []
  for (const session of await readdir(filesDir).catch(() => [])) {
    for (const entry of await readdir(path.join(filesDir, session)).catch(() => [])) {
      if (!entry.endsWith('.json')) continue
      const text = await readFile(path.join(filesDir, session, entry), 'utf8').catch(() => '{}')
      names.push(String((JSON.parse(text) as Json).name))
    }
  }
  return names
}

/** A multipart body built by hand, for what FormData cannot express (chunked sending, raw headers). */
function multipartBody (boundary: string, parts: Array<{ headers: string, data: string | Buffer }>): Buffer {
  const chunks: Buffer[] = []
  for (const part of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\n${part.headers}\r\n\r\n`), Buffer.from(part.data), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return Buffer.concat(chunks)
}

/** A request through node:http, so header names keep their case and the body can go out chunked. */
async function rawRequest (url: string, options: { method: string, headers: Record<string, string>, chunks?: Buffer[] }): Promise<{ status: number, headers: http.IncomingHttpHeaders, body: string }> {
  return await new Promise((resolve, reject) => {
    const request = http.request(url, { method: options.method, headers: options.headers }, (response) => {
      const received: Buffer[] = []
      response.on('data', (chunk: Buffer) => received.push(chunk))
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(received).toString('utf8') }))
      response.on('error', reject)
    })
    request.on('error', reject)
    for (const chunk of options.chunks ?? []) request.write(chunk)
    request.end()
  })
}

/** Run `node --import tsx src/server.ts` with exactly `env` (plus PATH) and wait for it to exit. */
async function startWithEnv (env: Record<string, string>): Promise<{ code: number | null, output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)))
  clearTimeout(timer)
  return { code, output }
}

for (const driver of availableDrivers()) {
  describe(`HTTP contract on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer
    /** AUTH=none, MAX_UPLOAD_MB=1, FILE_TTL=2s, SWEEP_INTERVAL=1s */
    let tight: RunningServer

    before(async () => {
      [server, tight] = await Promise.all([
        // a server of the default profile only (sessions.test.ts covers one that serves both)
        startServer(suite, { driver, env: { PROFILES: 'default' } }),
        startServer(suite, {
          driver,
          env: { AUTH: 'none', CODE_API_KEY: '', MAX_UPLOAD_MB: '1', FILE_TTL: '2s', SWEEP_INTERVAL: '1s' },
        }),
      ])
    })

    describe('routes at / and /v1', () => {
      for (const prefix of PREFIXES) {
        const at = prefix === '' ? 'the root' : prefix
        test(`upload, exec with the input, download, probe, list and both deletes work at ${at}`, async () => {
          const form = new FormData()
          form.append('kind', 'user')
          form.append('id', 'user-1')
          form.append('file', new Blob(['a,b\n1,2\n']), 'table.csv')
          form.append('file', new Blob(['second']), 'notes.txt')
          const uploaded = await call(server, prefix, '/upload', { method: 'POST', body: form })
          assert.equal(uploaded.status, 200)
          const { storage_session_id: sid, files } = await uploaded.json() as Json
          const [csv, notes] = files as Array<{ fileId: string, filename: string }>
          assert.ok(csv !== undefined && notes !== undefined)

          const ran = await call(server, prefix, '/exec', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              lang: 'py',
              code: 'print(open("table.csv").read().splitlines()[1])',
              files: [{ id: csv.fileId, storage_session_id: sid, name: 'table.csv', kind: 'user', resource_id: 'user-1' }],
            }),
          })
          assert.equal(ran.status, 200)
          assert.equal((await ran.json() as Json).stdout, '1,2\n')

          const downloaded = await call(server, prefix, `/download/${sid}/${csv.fileId}`)
          assert.equal(downloaded.status, 200)
          assert.equal(await downloaded.text(), 'a,b\n1,2\n')

          const probed = await call(server, prefix, `/sessions/${sid}/objects/${csv.fileId}`)
          assert.equal(probed.status, 200)
          const info = await probed.json() as Json
          assert.equal(info.name, `${sid}/${csv.fileId}`)
          assert.equal(info.originalFilename, 'table.csv')
          assert.equal(info.size, 8)
          assert.ok(!Number.isNaN(Date.parse(info.lastModified)), `lastModified ${info.lastModified}`)

          const listed = await call(server, prefix, `/files/${sid}?detail=simple`)
          assert.equal(listed.status, 200)
          assert.deepEqual(new Set(await listed.json() as string[]), new Set([`${sid}/${csv.fileId}`, `${sid}/${notes.fileId}`]))

          const deleted = await call(server, prefix, `/files/${sid}/${csv.fileId}`, { method: 'DELETE' })
          assert.equal(deleted.status, 200)
          assert.deepEqual(await deleted.json(), { message: 'success', session_id: sid, fileId: csv.fileId })
          const gone = await call(server, prefix, `/download/${sid}/${csv.fileId}`)
          assert.equal(gone.status, 404)
          assertErrorBody(await gone.json() as Json, 'file_not_found')

          const deletedObject = await call(server, prefix, `/sessions/${sid}/objects/${notes.fileId}`, { method: 'DELETE' })
          assert.equal(deletedObject.status, 200)
          assert.equal((await deletedObject.json() as Json).fileId, notes.fileId)
          const goneToo = await call(server, prefix, `/download/${sid}/${notes.fileId}`)
          assert.equal(goneToo.status, 404)
          assertErrorBody(await goneToo.json() as Json, 'file_not_found')

          const again = await call(server, prefix, `/files/${sid}/${csv.fileId}`, { method: 'DELETE' })
          assert.equal(again.status, 404, 'a second delete of the same file answers 404')
        })

        test(`GET ${prefix}/health answers without a key and names the ${driver} driver`, async () => {
          const response = await call(server, prefix, '/health', {}, false)
          assert.equal(response.status, 200)
          const health = await response.json() as Json
          assert.equal(health.status, 'ok')
          assert.equal(health.jail.driver, driver)
        })
      }

      test('GET /files/:sid answers the simple, summary, full and normalized shapes', async () => {
        const { sessionId: sid, fileId } = await uploadOne(server, 'report.csv', 'x,y\n')
        const list = async (detail: string) => {
          const response = await api(server, `/files/${sid}?detail=${detail}`)
          assert.equal(response.status, 200)
          const body = await response.json() as unknown[]
          assert.ok(Array.isArray(body))
          assert.equal(body.length, 1)
          return body[0] as Json
        }
        assert.equal(await list('simple'), `${sid}/${fileId}`)

        const summary = await list('summary')
        assert.deepEqual(Object.keys(summary).sort(), ['etag', 'lastModified', 'name', 'size'])
        assert.equal(summary.name, `${sid}/${fileId}`)
        assert.equal(summary.size, 4)
        assert.ok(!Number.isNaN(Date.parse(summary.lastModified)))

        const full = await list('full')
        for (const key of ['name', 'size', 'lastModified', 'etag']) assert.ok(key in full, `full lacks ${key}`)
        assert.equal(full.id, fileId)
        assert.equal(full.storage_session_id, sid)
        assert.match(full.contentType, /^text\/csv/)
        assert.equal(full.metadata['original-filename'], 'report.csv')

        const normalized = await list('normalized')
        assert.deepEqual(Object.keys(normalized).sort(), ['contentType', 'id', 'lastModified', 'name', 'size', 'storage_session_id'])
        assert.deepEqual({ ...normalized, lastModified: undefined }, {
          id: fileId, name: 'report.csv', storage_session_id: sid, size: 4, contentType: normalized.contentType, lastModified: undefined,
        })
        assert.match(normalized.contentType, /^text\/csv/)

        const byDefault = await api(server, `/files/${sid}`)
        assert.deepEqual((await byDefault.json() as Json[])[0], full, 'detail defaults to full')
        const unknownSession = await api(server, `/files/${'Z'.repeat(21)}?detail=simple`)
        assert.equal(unknownSession.status, 200)
        assert.deepEqual(await unknownSession.json(), [])
      })
    })

    describe('POST /exec', () => {
      test('a run answers session_id (21 chars), string stdout/stderr, files[] and the structured outcome', async () => {
        const body = await execOk(server, { lang: 'py', code: 'import sys\nprint("out")\nprint("err", file=sys.stderr)' })
        assert.match(body.session_id, ID)
        assert.equal(body.stdout, 'out\n')
        assert.equal(body.stderr, 'err\n')
        assert.deepEqual(body.files, [])
        assert.deepEqual(body.deleted_files, [])
        assert.equal(body.status, 'ok')
        assert.equal(body.exit_code, 0)
        assert.equal(body.signal, null)
        assert.equal(body.timed_out, false)
        assert.equal(body.oom_killed, false)
        assert.equal(body.truncated, false)
        assert.equal(typeof body.wall_time_ms, 'number')

        const failed = await execOk(server, { lang: 'py', code: 'import sys; sys.exit(3)' })
        assert.equal(failed.status, 'error')
        assert.equal(failed.exit_code, 3)
        assert.equal(typeof failed.stdout, 'string')
        assert.notEqual(failed.session_id, body.session_id, 'every execution gets its own session id')
      })

      test('unknown body fields LibreChat spreads into /exec (codeSessionKey, user_id, executionRouteKey…) are ignored', async () => {
        const body = await execOk(server, {
          lang: 'py',
          code: 'print(2 + 2)',
          codeSessionKey: 'execute_code',
          user_id: '65f0c0ffee0000000000abcd',
          executionRouteKey: 'default',
          environmentId: 'env-1',
          runtime_session_hint: 'v2:user:0123456789abcdef0123456789abcdef',
          session_id: 'previous-session-from-toolnode',
          codeEnvironmentSettings: { nested: [1, 2, 3] },
        })
        assert.equal(body.stdout, '4\n')
        assert.equal(body.status, 'ok')
      })

      for (const lang of ['py', 'python', 'python3']) {
        test(`lang "${lang}" runs Python 3`, async () => {
          const body = await execOk(server, { lang, code: 'import sys; print(sys.version_info[0])' })
          assert.equal(body.stdout, '3\n')
        })
      }
      for (const lang of ['bash', 'sh']) {
        test(`lang "${lang}" runs bash with args as argv`, async () => {
          // a bash-only expansion: plain sh would print an empty first word
          const code = ['echo "$', '{BASH_VERSION:+bash}" "$#" "$1"'].join('')
          const body = await execOk(server, { lang, code, args: ['a b', 'c'] })
          assert.equal(body.stdout, 'bash 2 a b\n')
        })
      }

      for (const lang of ['kotlin', 'ruby']) {
        test(`a language Warden does not know ("${lang}") answers 400 unsupported_language naming the supported ones`, async () => {
          const { status, body } = await exec(server, { lang, code: 'print(1)' })
          assert.equal(status, 400)
          assertErrorBody(body, 'unsupported_language')
          for (const supported of ['py', 'python', 'bash']) assert.match(body.message, new RegExp(`\\b${supported}\\b`))
        })
      }

      test('X-CodeAPI-Expected-Profile: default runs; stateful answers 409 execution_profile_mismatch; garbage answers 400', async () => {
        const send = async (profile: string) => await api(server, '/exec', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-codeapi-expected-profile': profile },
          body: JSON.stringify({ lang: 'py', code: 'print("ran")' }),
        })
        const asDefault = await send('default')
        assert.equal(asDefault.status, 200)
        assert.equal((await asDefault.json() as Json).stdout, 'ran\n')

        const asStateful = await send('stateful')
        assert.equal(asStateful.status, 409)
        const mismatch = await asStateful.json() as Json
        assertErrorBody(mismatch, 'execution_profile_mismatch')
        assert.equal(mismatch.expected_profile, 'stateful')
        assert.equal(mismatch.actual_profile, 'default')

        const garbage = await send('turbo-mode')
        assert.equal(garbage.status, 400)
        assertErrorBody(await garbage.json() as Json, 'invalid_execution_profile')
      })

      test('every answer (200, 4xx, 404 route, /health, upload, download, list) carries x-codeapi-execution-profile: default', async () => {
        const { sessionId, fileId } = await uploadOne(server, 'p.txt', 'p')
        const responses: Array<[string, Response]> = [
          ['exec 200', await api(server, '/exec', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"lang":"py","code":"1"}' })],
          ['exec 400', await api(server, '/exec', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' })],
          ['exec 409', await api(server, '/exec', { method: 'POST', headers: { 'content-type': 'application/json', 'x-codeapi-expected-profile': 'stateful' }, body: '{}' })],
          ['unknown route 404', await api(server, '/no-such-route')],
          ['health', await call(server, '', '/health', {}, false)],
          ['download', await download(server, sessionId, fileId)],
          ['probe', await api(server, `/sessions/${sessionId}/objects/${fileId}`)],
          ['list', await api(server, `/files/${sessionId}`)],
          ['download 404', await download(server, sessionId, 'N'.repeat(21))],
        ]
        for (const [what, response] of responses) {
          assert.equal(response.headers.get('x-codeapi-execution-profile'), 'default', what)
          await response.arrayBuffer()
        }
      })

      test('a 401 for a missing key also carries x-codeapi-execution-profile: default (spec §4.4: every response)', async () => {
        const response = await call(server, '/v1', '/exec', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }, false)
        assert.equal(response.status, 401)
        assert.equal(response.headers.get('x-codeapi-execution-profile'), 'default')
      })
    })

    describe('authentication', () => {
      const sid = 'S'.repeat(21)
      const fid = 'F'.repeat(21)
      const routes: Array<[string, string]> = [
        ['POST', '/exec'],
        ['POST', '/upload'],
        ['GET', `/download/${sid}/${fid}`],
        ['GET', `/sessions/${sid}/objects/${fid}`],
        ['GET', `/files/${sid}?detail=simple`],
        ['DELETE', `/files/${sid}/${fid}`],
        ['DELETE', `/sessions/${sid}/objects/${fid}`],
      ]

      test('every route but /health answers 401 {error, message} to a missing or a wrong x-api-key, at / and /v1', async () => {
        for (const prefix of PREFIXES) {
          for (const [method, route] of routes) {
            for (const key of [undefined, 'wrong-key', `${server.apiKey}x`]) {
              const headers: Record<string, string> = { 'content-type': 'application/json' }
              if (key !== undefined) headers['x-api-key'] = key
              const response = await call(server, prefix, route, {
                method,
                headers,
                ...(method === 'POST' && { body: JSON.stringify({ lang: 'py', code: 'print(1)' }) }),
              }, false)
              const what = `${method} ${prefix}${route} with key ${String(key)}`
              assert.equal(response.status, 401, what)
              assertErrorBody(await response.json() as Json, 'unauthorized')
            }
          }
        }
      })

      test('the key header name is case-insensitive: X-API-Key and X-API-KEY are accepted', async () => {
        for (const name of ['X-API-Key', 'X-API-KEY', 'x-api-key']) {
          const response = await rawRequest(`${server.apiUrl}/exec`, {
            method: 'POST',
            headers: { [name]: server.apiKey, 'Content-Type': 'application/json' },
            chunks: [Buffer.from(JSON.stringify({ lang: 'py', code: 'print("authorized")' }))],
          })
          assert.equal(response.status, 200, `${name}: ${response.body}`)
          assert.equal(JSON.parse(response.body).stdout, 'authorized\n')
        }
      })

      test('a server started with AUTH=none and no key serves /exec, /upload and /files without a key', async () => {
        const ran = await fetch(`${tight.apiUrl}/exec`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ lang: 'py', code: 'print("open")' }),
        })
        assert.equal(ran.status, 200)
        assert.equal((await ran.json() as Json).stdout, 'open\n')

        const form = new FormData()
        form.append('file', new Blob(['free']), 'free.txt')
        const uploaded = await fetch(`${tight.apiUrl}/upload`, { method: 'POST', body: form })
        assert.equal(uploaded.status, 200)
        const sid = (await uploaded.json() as Json).storage_session_id as string
        const listed = await fetch(`${tight.baseUrl}/files/${sid}?detail=simple`)
        assert.equal(listed.status, 200)
        assert.equal((await listed.json() as unknown[]).length, 1)
      })

      test('a server with neither CODE_API_KEY nor AUTH=none refuses to start and names CODE_API_KEY', async () => {
        const dataDir = await mkdtemp(path.join(os.tmpdir(), 'warden-refuse-'))
        try {
          const { code, output } = await startWithEnv({ HOST: '127.0.0.1', PORT: '0', DATA_DIR: dataDir, JAIL: driver })
          assert.notEqual(code, 0)
          assert.match(output, /CODE_API_KEY/)
          assert.doesNotMatch(output, /Warden is ready/)
        } finally {
          await rm(dataDir, { recursive: true, force: true })
        }
      })

      for (const [variable, value] of [['PORT', 'abc'], ['MEMORY_LIMIT_MB', '-1'], ['FILE_TTL', 'soon']] as const) {
        test(`${variable}=${value} stops the server at start with a message naming ${variable}`, async () => {
          const dataDir = await mkdtemp(path.join(os.tmpdir(), 'warden-refuse-'))
          try {
            const { code, output } = await startWithEnv({
              HOST: '127.0.0.1', PORT: '0', DATA_DIR: dataDir, JAIL: driver, CODE_API_KEY: 'k', [variable]: value,
            })
            assert.notEqual(code, 0)
            assert.match(output, new RegExp(`\\b${variable}\\b`))
            assert.doesNotMatch(output, /Warden is ready/)
          } finally {
            await rm(dataDir, { recursive: true, force: true })
          }
        })
      }
    })

    describe('POST /upload', () => {
      test('LibreChat\'s form (kind, id, then file) answers success with equal storage_session_id and session_id and 21-char ids', async () => {
        const { body, sessionId, files } = await upload(server, [{ name: 'data.csv', data: 'a\n1\n', type: 'text/csv' }],
          [['kind', 'user'], ['id', '65f0c0ffee0000000000abcd']])
        assert.equal(body.message, 'success')
        assert.match(sessionId, ID)
        assert.equal(body.session_id, sessionId)
        assert.equal(files.length, 1)
        assert.match(files[0]!.fileId, ID)
        assert.equal(files[0]!.filename, 'data.csv')
        const downloaded = await download(server, sessionId, files[0]!.fileId)
        assert.equal(await downloaded.text(), 'a\n1\n')
      })

      test('the legacy entity_id field, kind=agent, and kind=skill with version are accepted', async () => {
        const legacy = await upload(server, [{ name: 'legacy.txt', data: 'l' }], [['entity_id', 'agent_abc']])
        assert.equal(legacy.body.message, 'success')
        assert.equal(legacy.body.session_id, legacy.sessionId)
        const agent = await upload(server, [{ name: 'agent.txt', data: 'a' }], [['kind', 'agent'], ['id', 'agent_xyz']])
        assert.equal(agent.files[0]?.filename, 'agent.txt')
        const skill = await upload(server, [{ name: 'SKILL.md', data: '# skill' }], [['kind', 'skill'], ['id', '65f0c0ffee0000000000abcd'], ['version', '3']])
        assert.equal(skill.files[0]?.filename, 'SKILL.md')
        assert.equal(await (await download(server, skill.sessionId, skill.files[0]!.fileId)).text(), '# skill')
      })

      test('the field name "files" works like "file", and several files in one request share one session', async () => {
        const { sessionId, files } = await upload(server, [
          { name: 'one.txt', data: '1', field: 'files' },
          { name: 'two.txt', data: '22', field: 'files' },
          { name: 'three.txt', data: '333', field: 'file' },
        ])
        assert.deepEqual(files.map((file) => file.filename), ['one.txt', 'two.txt', 'three.txt'])
        assert.equal(new Set(files.map((file) => file.fileId)).size, 3)
        for (const file of files) assert.match(file.fileId, ID)
        const listed = await api(server, `/files/${sessionId}?detail=normalized`)
        const names = (await listed.json() as Json[]).map((file) => `${file.name}:${file.size}`).sort()
        assert.deepEqual(names, ['one.txt:1', 'three.txt:3', 'two.txt:2'])
      })

      test('a nested name pptx/editing.md keeps its path, in the answer, the listing and /mnt/data', async () => {
        const { sessionId, fileId, name } = await uploadOne(server, 'pptx/editing.md', '# editing')
        assert.equal(name, 'pptx/editing.md')
        const listed = await api(server, `/files/${sessionId}?detail=normalized`)
        assert.equal((await listed.json() as Json[])[0]?.name, 'pptx/editing.md')
        const body = await execOk(server, {
          lang: 'bash',
          code: 'cat /mnt/data/pptx/editing.md',
          files: [{ id: fileId, storage_session_id: sessionId, name, kind: 'skill', resource_id: 'skill-1', version: 1 }],
        })
        assert.equal(body.stdout, '# editing')
      })

      test('a chunked upload (Transfer-Encoding: chunked, no Content-Length) is stored whole', async () => {
        const boundary = '----warden' + randomBytes(8).toString('hex')
        const payload = randomBytes(300_000)
        const body = multipartBody(boundary, [
          { headers: 'Content-Disposition: form-data; name="kind"', data: 'user' },
          { headers: 'Content-Disposition: form-data; name="id"', data: 'user-1' },
          { headers: 'Content-Disposition: form-data; name="file"; filename="chunked.bin"\r\nContent-Type: application/octet-stream', data: payload },
        ])
        const chunks: Buffer[] = []
        for (let offset = 0; offset < body.length; offset += 16_384) chunks.push(body.subarray(offset, offset + 16_384))
        const response = await rawRequest(`${server.apiUrl}/upload`, {
          method: 'POST',
          headers: { 'x-api-key': server.apiKey, 'content-type': `multipart/form-data; boundary=${boundary}`, 'user-agent': 'LibreChat/1.0' },
          chunks,
        })
        assert.equal(response.status, 200, response.body)
        const answer = JSON.parse(response.body) as Json
        assert.equal(answer.message, 'success')
        const downloaded = await download(server, answer.storage_session_id, answer.files[0].fileId)
        assert.ok(Buffer.from(await downloaded.arrayBuffer()).equals(payload), 'chunked upload bytes differ')
      })

      test('a 2 MiB file over MAX_UPLOAD_MB=1 answers 413 JSON, stores nothing (not even the small file before it), and the server keeps serving', async () => {
        const form = new FormData()
        form.append('kind', 'user')
        form.append('id', 'user-1')
        form.append('file', new Blob(['small first']), 'small.txt')
        form.append('file', new Blob([randomBytes(2 * 1024 * 1024)]), 'big.bin')
        const response = await fetch(`${tight.apiUrl}/upload`, { method: 'POST', body: form })
        assert.equal(response.status, 413)
        assertErrorBody(await response.json() as Json, 'payload_too_large')
        const leftovers = (await storedNames(tight.dataDir)).filter((name) => name === 'small.txt' || name === 'big.bin')
        assert.deepEqual(leftovers, [], 'a rejected upload left files in the store')

        const small = new FormData()
        small.append('file', new Blob(['fits']), 'fits.txt')
        const ok = await fetch(`${tight.apiUrl}/upload`, { method: 'POST', body: small })
        assert.equal(ok.status, 200)
        assert.ok((await storedNames(tight.dataDir)).includes('fits.txt'), 'the store scan sees stored files')
        const ran = await fetch(`${tight.apiUrl}/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"lang":"py","code":"print(1)"}' })
        assert.equal((await ran.json() as Json).stdout, '1\n')
      })
    })

    describe('GET /download', () => {
      test('Content-Type follows the extension (text/csv, image/png), Content-Length equals the bytes, Content-Disposition is an attachment', async () => {
        const png = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(1000)])
        const cases: Array<[string, Buffer, RegExp]> = [
          ['sales.csv', Buffer.from('q,n\n1,2\n'), /^text\/csv\b/],
          ['chart.png', png, /^image\/png$/],
          ['dir/page.html', Buffer.from('<p>x</p>'), /^text\/html\b/],
        ]
        for (const [name, data, type] of cases) {
          const { sessionId, fileId } = await uploadOne(server, name, data, 'application/octet-stream')
          const response = await download(server, sessionId, fileId)
          assert.equal(response.status, 200)
          assert.match(response.headers.get('content-type') ?? '', type, name)
          assert.equal(response.headers.get('content-length'), String(data.length), name)
          const disposition = response.headers.get('content-disposition') ?? ''
          const base = name.split('/').pop()!
          assert.match(disposition, /^attachment;/, name)
          assert.ok(disposition.includes(`filename="${base}"`), `${name}: ${disposition}`)
          assert.ok(Buffer.from(await response.arrayBuffer()).equals(data), name)
        }
      })

      test('a unicode name "résumé 数据.csv" is sent as filename*=UTF-8\'\' and decodes back exactly', async () => {
        const name = 'résumé 数据.csv'
        const { sessionId, fileId, name: stored } = await uploadOne(server, name, 'u\n')
        assert.equal(stored, name)
        const response = await download(server, sessionId, fileId)
        assert.equal(response.status, 200)
        const disposition = response.headers.get('content-disposition') ?? ''
        assert.match(disposition, /^attachment;/)
        // the header must be pure ASCII to survive every proxy; the exact name travels in filename*
        assert.match(disposition, /^[\x20-\x7e]*$/)
        const encoded = /filename\*=UTF-8''([^;\s]+)/i.exec(disposition)
        assert.ok(encoded?.[1] !== undefined, disposition)
        assert.equal(decodeURIComponent(encoded[1]), name)
        const fallback = /filename="([^"]*)"/.exec(disposition)
        assert.ok(fallback?.[1] !== undefined && fallback[1].endsWith('.csv'), disposition)
      })

      test('a 5 MiB random binary downloads byte for byte', async () => {
        const data = randomBytes(5 * 1024 * 1024)
        const { sessionId, fileId } = await uploadOne(server, 'blob.bin', data)
        const response = await download(server, sessionId, fileId)
        assert.equal(response.status, 200)
        assert.equal(response.headers.get('content-type'), 'application/octet-stream')
        assert.equal(response.headers.get('content-length'), String(data.length))
        const received = Buffer.from(await response.arrayBuffer())
        assert.equal(received.length, data.length)
        assert.ok(received.equals(data), 'downloaded bytes differ from the upload')
      })

      test('the LibreChat query ?kind=user&id=<owner> (and &version) is tolerated on download, probe and list', async () => {
        const { sessionId, fileId } = await uploadOne(server, 'q.txt', 'query')
        const downloaded = await download(server, sessionId, fileId, '?kind=user&id=user-1')
        assert.equal(downloaded.status, 200)
        assert.equal(await downloaded.text(), 'query')
        const probed = await api(server, `/sessions/${sessionId}/objects/${fileId}?kind=skill&id=abc&version=2`)
        assert.equal(probed.status, 200)
        const listed = await api(server, `/files/${sessionId}?detail=full&kind=user&id=user-1`)
        assert.equal(listed.status, 200)
        assert.equal((await listed.json() as unknown[]).length, 1)
      })
    })

    describe('output files', () => {
      test('a file written under /mnt/data comes back with a relative name (nested dirs kept), the exec session, and downloads', async () => {
        const body = await execOk(server, {
          lang: 'py',
          code: [
            'import os',
            'os.makedirs("out/deep", exist_ok=True)',
            'open("out/deep/result.csv", "w").write("k,v\\n1,2\\n")',
            'open("top.txt", "w").write("top")',
          ].join('\n'),
        })
        const byName = new Map((body.files as Json[]).map((file) => [file.name, file]))
        assert.deepEqual([...byName.keys()].sort(), ['out/deep/result.csv', 'top.txt'])
        const nested = byName.get('out/deep/result.csv')!
        assert.match(nested.id, ID)
        assert.equal(nested.storage_session_id, body.session_id)
        assert.equal(nested.path, '/mnt/data/out/deep/result.csv')
        const response = await download(server, nested.storage_session_id, nested.id)
        assert.equal(response.status, 200)
        assert.match(response.headers.get('content-type') ?? '', /^text\/csv/)
        assert.match(response.headers.get('content-disposition') ?? '', /filename="result\.csv"/)
        assert.equal(await response.text(), 'k,v\n1,2\n')
      })

      test('a symlink, a FIFO and a directory-only tree are not outputs, and /etc/passwd is never downloadable', async () => {
        const body = await execOk(server, {
          lang: 'py',
          code: [
            'import os',
            'os.symlink("/etc/passwd", "passwd.txt")',
            'os.makedirs("links")',
            'os.symlink("/etc", "links/etc")',
            'os.mkfifo("pipe.csv")',
            'os.makedirs("only/dirs/here")',
            'open("real.txt", "w").write("real")',
          ].join('\n'),
        })
        assert.deepEqual((body.files as Json[]).map((file) => file.name), ['real.txt'])
        assert.match(body.stderr, /symlink|special/i, 'the skipped links are mentioned in stderr')
        const listed = await api(server, `/files/${body.session_id}?detail=normalized`)
        const stored = await listed.json() as Json[]
        assert.deepEqual(stored.map((file) => file.name), ['real.txt'])
        for (const file of stored) {
          const text = await (await download(server, body.session_id, file.id)).text()
          assert.doesNotMatch(text, /root:.*:0:0:/)
        }
      })

      test('an input the code only read is not returned; a new file is; a deleted input is listed in deleted_files', async () => {
        const input = await uploadOne(server, 'input.csv', 'a,b\n')
        const victim = await uploadOne(server, 'old.csv', 'old\n')
        const refs = [
          { id: input.fileId, storage_session_id: input.sessionId, name: 'input.csv', kind: 'user', resource_id: 'user-1' },
          { id: victim.fileId, session_id: victim.sessionId, name: 'old.csv' }, // legacy ref shape (spec §10)
        ]
        const body = await execOk(server, {
          lang: 'py',
          code: 'import os\nprint(open("input.csv").read().strip())\nos.remove("old.csv")\nopen("new.txt", "w").write("new")',
          files: refs,
        })
        assert.equal(body.stdout, 'a,b\n')
        assert.deepEqual((body.files as Json[]).map((file) => file.name), ['new.txt'])
        assert.deepEqual(body.deleted_files, ['old.csv'])
        const stillThere = await download(server, victim.sessionId, victim.fileId)
        assert.equal(stillThere.status, 200, 'deleting in the jail does not delete the stored input')
        await stillThere.arrayBuffer()
      })

      test('a modified input comes back under the same name with a new id', async () => {
        const input = await uploadOne(server, 'edit.txt', 'before')
        const body = await execOk(server, {
          lang: 'bash',
          code: 'printf after > edit.txt',
          files: [{ id: input.fileId, storage_session_id: input.sessionId, name: 'edit.txt', kind: 'user', resource_id: 'user-1' }],
        })
        const [edited] = body.files as Json[]
        assert.equal(edited?.name, 'edit.txt')
        assert.notEqual(edited.id, input.fileId)
        assert.equal(await (await download(server, edited.storage_session_id, edited.id)).text(), 'after')
        assert.equal(await (await download(server, input.sessionId, input.fileId)).text(), 'before')
      })

      test('a successful run that writes 20 output files answers status ok, all 20 files and exactly its stdout/stderr (40 runs)', async () => {
        // the runner ends each stream with a 16-byte fence and then a done frame (src/pool/protocol.ts);
        // the answer must wait for both, whichever order the host reads them in
        const code = [
          'import sys',
          'for i in range(20): open(f"out{i}.txt", "w").write("x" * 100_000)',
          'print("exact")',
          'print("warn", file=sys.stderr)',
        ].join('\n')
        const anomalies: string[] = []
        await Promise.all(Array.from({ length: 4 }, async () => {
          for (let run = 0; run < 10; run++) {
            const body = await execOk(server, { lang: 'py', code })
            if (body.status !== 'ok' || body.files.length !== 20 || body.stdout !== 'exact\n' || body.stderr !== 'warn\n') {
              anomalies.push(JSON.stringify({ status: body.status, signal: body.signal, files: body.files.length, stdout: body.stdout, stderr: body.stderr }))
            }
          }
        }))
        assert.deepEqual(anomalies, [], `${anomalies.length} of 40 runs answered something else`)
      })

      test('a failed run (exception after writing a file) returns no files and says so in stderr', async () => {
        const body = await execOk(server, {
          lang: 'py',
          code: 'open("partial.csv", "w").write("half")\nraise RuntimeError("boom")',
        })
        assert.equal(body.status, 'error')
        assert.equal(body.exit_code, 1)
        assert.deepEqual(body.files, [])
        assert.match(body.stderr, /RuntimeError: boom/)
        assert.match(body.stderr, /not kept/)
        const listed = await api(server, `/files/${body.session_id}?detail=simple`)
        assert.deepEqual(await listed.json(), [])
      })
    })

    describe('retention (FILE_TTL=2s, SWEEP_INTERVAL=1s)', () => {
      test('an unused file disappears after the TTL: gone from the listing within ~4 s, then 404 on download', async () => {
        const form = new FormData()
        form.append('file', new Blob(['ephemeral']), 'ttl.txt')
        const uploadedAt = Date.now()
        const uploaded = await fetch(`${tight.apiUrl}/upload`, { method: 'POST', body: form })
        const { storage_session_id: sid, files } = await uploaded.json() as Json
        const fileId = files[0].fileId as string
        // listing does not count as use, so it can watch without keeping the file alive
        const listing = async () => await (await fetch(`${tight.apiUrl}/files/${sid}?detail=simple`)).json() as string[]
        assert.equal((await listing()).length, 1)
        let goneAfterMs = -1
        while (Date.now() - uploadedAt < 8000) {
          await sleep(200)
          if ((await listing()).length === 0) {
            goneAfterMs = Date.now() - uploadedAt
            break
          }
        }
        assert.ok(goneAfterMs >= 1800, `removed after ${goneAfterMs} ms, before the 2 s TTL`)
        assert.ok(goneAfterMs > 0 && goneAfterMs <= 5000, `still listed ${Date.now() - uploadedAt} ms after upload`)
        const response = await fetch(`${tight.apiUrl}/download/${sid}/${fileId}`)
        assert.equal(response.status, 404)
        assertErrorBody(await response.json() as Json, 'file_not_found')
      })

      test('a file probed every second through GET /sessions/…/objects/… survives well past the TTL', async () => {
        const form = new FormData()
        form.append('file', new Blob(['kept alive']), 'alive.txt')
        const uploaded = await fetch(`${tight.apiUrl}/upload`, { method: 'POST', body: form })
        const { storage_session_id: sid, files } = await uploaded.json() as Json
        const fileId = files[0].fileId as string
        const started = Date.now()
        while (Date.now() - started < 5500) {
          const probe = await fetch(`${tight.apiUrl}/sessions/${sid}/objects/${fileId}`)
          assert.equal(probe.status, 200, `probe failed ${Date.now() - started} ms after upload`)
          const info = await probe.json() as Json
          assert.ok(Date.now() - Date.parse(info.lastModified) < 1500, 'a probe refreshes lastModified')
          await sleep(1000)
        }
        const response = await fetch(`${tight.apiUrl}/download/${sid}/${fileId}`)
        assert.equal(response.status, 200)
        assert.equal(await response.text(), 'kept alive')
      })
    })
  })
}

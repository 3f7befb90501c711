import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { before, describe, test } from 'node:test'
import { api, availableDrivers, exec, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'

/**
 * Bad input gets a clear 4xx `{error, message}` (src/errors.ts) and never hurts the server: after each
 * case a plain `print(1)` still runs. One server per driver, started with MAX_BODY_MB=1.
 */

type Json = Record<string, any>

const SOME_ID = 'A'.repeat(21)

/** POST /v1/exec with a raw body (string or bytes) and a content type. */
async function postExec (server: RunningServer, body: string | Uint8Array, contentType = 'application/json'): Promise<Response> {
  return await api(server, '/exec', { method: 'POST', headers: { 'content-type': contentType }, body })
}

/** The answer is `status` with a JSON `{error: code, message: <non-empty string>}`. */
async function assertRejected (response: Response, status: number, codes: string | string[], what = ''): Promise<Json> {
  const text = await response.text()
  assert.equal(response.status, status, `${what} ${text}`)
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/, what)
  const body = JSON.parse(text) as Json
  const expected = Array.isArray(codes) ? codes : [codes]
  assert.ok(expected.includes(body.error), `${what}: error ${JSON.stringify(body.error)} is not one of ${expected.join(', ')}`)
  assert.equal(typeof body.message, 'string', what)
  assert.ok(body.message.trim().length > 0, `${what}: empty message`)
  return body
}

/** The server still runs code: `print(1)` answers 1. */
async function assertStillServing (server: RunningServer): Promise<void> {
  const { status, body } = await exec(server, { lang: 'py', code: 'print(1)' })
  assert.equal(status, 200, `the server stopped serving: ${JSON.stringify(body)}`)
  assert.equal(body.stdout, '1\n')
}

async function uploadNamed (server: RunningServer, name: string): Promise<Response> {
  const form = new FormData()
  form.append('file', new Blob(['payload']), name)
  return await api(server, '/upload', { method: 'POST', body: form })
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

const TRAVERSAL_NAMES = ['../x', '/etc/passwd', 'a/../../b', 'a\u0000b', 'a\nb']

for (const driver of availableDrivers()) {
  describe(`bad input on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer

    before(async () => {
      server = await startServer(suite, { driver, env: { MAX_BODY_MB: '1' } })
    })

    describe('malformed /exec bodies', () => {
      test('malformed JSON answers 400 invalid_request', async () => {
        for (const body of ['{"lang":"py","code":"print(1)"', '{lang: py}', '{"lang":"py",}', 'not json at all']) {
          await assertRejected(await postExec(server, body), 400, 'invalid_request', body)
        }
        await assertStillServing(server)
      })

      test('a JSON body that is an array, a string, a number or null answers 400 invalid_request', async () => {
        for (const body of ['[{"lang":"py","code":"print(1)"}]', '"print(1)"', '42', 'null']) {
          await assertRejected(await postExec(server, body), 400, 'invalid_request', body)
        }
        await assertStillServing(server)
      })

      test('an empty body answers 400 invalid_request', async () => {
        await assertRejected(await postExec(server, ''), 400, 'invalid_request')
        await assertStillServing(server)
      })

      test('a missing code, or a code that is not a string, answers 400 invalid_request naming code', async () => {
        for (const body of [{ lang: 'py' }, { lang: 'py', code: 42 }, { lang: 'py', code: ['print(1)'] }, { lang: 'py', code: null }]) {
          const rejected = await assertRejected(await postExec(server, JSON.stringify(body)), 400, 'invalid_request', JSON.stringify(body))
          assert.match(rejected.message, /code/)
        }
        await assertStillServing(server)
      })

      test('a missing lang answers 400 invalid_request', async () => {
        await assertRejected(await postExec(server, JSON.stringify({ code: 'print(1)' })), 400, 'invalid_request')
        await assertStillServing(server)
      })

      test('args that are not an array of strings answer 400 invalid_request naming args', async () => {
        for (const args of ['a b', [1, 2], ['ok', null], [{ a: 1 }], { 0: 'a' }]) {
          const body = JSON.stringify({ lang: 'bash', code: 'echo "$@"', args })
          const rejected = await assertRejected(await postExec(server, body), 400, 'invalid_request', body)
          assert.match(rejected.message, /args/)
        }
        await assertStillServing(server)
      })

      test('a 2 MiB body over MAX_BODY_MB=1 answers 413 payload_too_large', async () => {
        const body = JSON.stringify({ lang: 'py', code: `# ${'x'.repeat(2 * 1024 * 1024)}\nprint(1)` })
        await assertRejected(await postExec(server, body), 413, 'payload_too_large')
        await assertStillServing(server)
      })

      test('Content-Type text/plain answers 415 unsupported_media_type', async () => {
        const body = JSON.stringify({ lang: 'py', code: 'print(1)' })
        await assertRejected(await postExec(server, body, 'text/plain'), 415, 'unsupported_media_type')
        await assertStillServing(server)
      })

      test('Content-Type application/xml answers 415 unsupported_media_type', async () => {
        await assertRejected(await postExec(server, '<exec/>', 'application/xml'), 415, 'unsupported_media_type')
        await assertStillServing(server)
      })

      test('a NUL byte in code answers 400 invalid_request', async () => {
        await assertRejected(await postExec(server, JSON.stringify({ lang: 'py', code: 'print(1)\u0000' })), 400, 'invalid_request')
        await assertRejected(await postExec(server, JSON.stringify({ lang: 'bash', code: 'echo', args: ['a\u0000b'] })), 400, 'invalid_request', 'NUL in args')
        await assertStillServing(server)
      })

      test('a lone surrogate in code (JSON "\\ud800") answers 400 invalid_request', async () => {
        const body = '{"lang":"py","code":"print(\'\\ud800\')"}'
        await assertRejected(await postExec(server, body), 400, 'invalid_request')
        await assertRejected(await postExec(server, '{"lang":"py","code":"x = 1 # \\udc00"}'), 400, 'invalid_request', 'lone low surrogate')
        await assertStillServing(server)
      })

      test('invalid UTF-8 bytes in the raw body answer a 4xx, or a 200 with replacement characters, never a 5xx', async () => {
        const bodies = [
          Buffer.concat([Buffer.from('{"lang":"py","code":"print(\'A'), Buffer.from([0xff, 0xfe]), Buffer.from('B\')"}')]),
          Buffer.concat([Buffer.from('{"lang":"py","code":"print(1)","'), Buffer.from([0xc3, 0x28]), Buffer.from('":1}')]),
          Buffer.from([0xff, 0xff, 0xff, 0xff]),
        ]
        for (const body of bodies) {
          const response = await postExec(server, body)
          const text = await response.text()
          assert.ok(response.status < 500, `answered ${response.status}: ${text}`)
          const answer = JSON.parse(text) as Json
          if (response.status === 200) {
            assert.equal(typeof answer.stdout, 'string')
            if (answer.stdout !== '1\n') assert.match(answer.stdout, /^A\uFFFD+B\n$/)
          } else {
            assert.ok(response.status >= 400)
            assert.equal(typeof answer.error, 'string')
            assert.ok(answer.message.length > 0)
          }
        }
        await assertStillServing(server)
      })
    })

    describe('bad file references and ids', () => {
      test('unknown file ids in files[] answer 404 file_not_found', async () => {
        const known = await uploadFile(server, 'known.txt', 'k', 'user-1')
        const cases = [
          { id: SOME_ID, storage_session_id: SOME_ID, name: 'x.txt' },
          { id: SOME_ID, storage_session_id: known.sessionId, name: 'x.txt' },
          { id: known.fileId, storage_session_id: SOME_ID, name: 'x.txt' },
          { id: SOME_ID, session_id: SOME_ID, name: 'legacy.txt' },
        ]
        for (const ref of cases) {
          const body = JSON.stringify({ lang: 'py', code: 'print(1)', files: [ref] })
          await assertRejected(await postExec(server, body), 404, 'file_not_found', JSON.stringify(ref))
        }
        await assertStillServing(server)
      })

      test('ids of the wrong shape in files[] answer 400 invalid_request or invalid_id', async () => {
        const refs = [
          { id: 'abc', storage_session_id: SOME_ID, name: 'x.txt' },
          { id: SOME_ID, storage_session_id: '../../etc', name: 'x.txt' },
          { id: 'A'.repeat(22), storage_session_id: SOME_ID, name: 'x.txt' },
          { id: `${'A'.repeat(20)}.`, storage_session_id: SOME_ID, name: 'x.txt' },
          { id: 12345, storage_session_id: SOME_ID, name: 'x.txt' },
          { id: SOME_ID, name: 'no-session.txt' },
          { storage_session_id: SOME_ID, name: 'no-id.txt' },
        ]
        for (const ref of refs) {
          const body = JSON.stringify({ lang: 'py', code: 'print(1)', files: [ref] })
          await assertRejected(await postExec(server, body), 400, ['invalid_request', 'invalid_id'], JSON.stringify(ref))
        }
        await assertRejected(await postExec(server, JSON.stringify({ lang: 'py', code: '1', files: 'x.txt' })), 400, 'invalid_request', 'files not an array')
        await assertStillServing(server)
      })

      test('ids that cannot exist in /download, /sessions and deletes answer 404 like unknown ones; /files lists nothing', async () => {
        const bad = ['abc', 'A'.repeat(22), `${'A'.repeat(20)}.`, '..%2F..%2Fetc%2Fpasswd', `${'A'.repeat(19)}%00A`, '%C3%A9'.repeat(21)]
        const routes: Array<[string, string]> = []
        for (const id of bad) {
          routes.push(
            ['GET', `/download/${id}/${SOME_ID}`],
            ['GET', `/download/${SOME_ID}/${id}`],
            ['GET', `/sessions/${id}/objects/${SOME_ID}`],
            ['GET', `/sessions/${SOME_ID}/objects/${id}`],
            ['DELETE', `/files/${SOME_ID}/${id}`],
            ['DELETE', `/sessions/${id}/objects/${SOME_ID}`]
          )
          const listing = await api(server, `/files/${id}`)
          assert.equal(listing.status, 200, `GET /files/${id}`)
          assert.deepEqual(await listing.json(), [])
        }
        for (const [method, route] of routes) {
          await assertRejected(await api(server, route, { method }), 404, ['file_not_found', 'not_found'], `${method} ${route}`)
        }
        await assertRejected(await api(server, `/files/${SOME_ID}?detail=everything`), 400, 'invalid_request', 'unknown detail')
        await assertStillServing(server)
      })

      for (const name of TRAVERSAL_NAMES) {
        test(`input name ${JSON.stringify(name)} in files[] answers 400 invalid_file_name`, async () => {
          const { sessionId, fileId } = await uploadFile(server, 'real.txt', 'secret-free', 'user-1')
          const body = JSON.stringify({
            lang: 'bash',
            code: 'ls -la /mnt/data /etc/passwd; echo ran',
            files: [{ id: fileId, storage_session_id: sessionId, name, kind: 'user', resource_id: 'user-1' }],
          })
          await assertRejected(await postExec(server, body), 400, 'invalid_file_name')
          await assertStillServing(server)
        })
      }

      test('traversal names as upload filenames answer 400 invalid_file_name and store nothing', async () => {
        for (const name of ['../x', '/etc/passwd', 'a/../../b', 'a\u0000b']) {
          await assertRejected(await uploadNamed(server, name), 400, 'invalid_file_name', JSON.stringify(name))
        }
        const stored = await storedNames(server.dataDir)
        assert.ok(stored.includes('real.txt') || stored.includes('known.txt'), 'the store scan sees stored files')
        for (const name of stored) {
          assert.ok(!name.split('/').includes('..') && !name.startsWith('/') && !name.includes('\u0000'), `stored ${JSON.stringify(name)}`)
        }
        await assertStillServing(server)
      })

      test('a filename with a newline (sent as filename*=UTF-8\'\'a%0Ab) answers 400', async () => {
        const boundary = 'warden-boundary'
        const body = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename*=UTF-8''a%0Ab\r\n` +
          `Content-Type: text/plain\r\n\r\nnewline\r\n--${boundary}--\r\n`
        const response = await api(server, '/upload', {
          method: 'POST',
          headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
          body,
        })
        await assertRejected(response, 400, ['invalid_file_name', 'invalid_request'])
        assert.ok(!(await storedNames(server.dataDir)).some((name) => name.includes('\n')), 'a name with a newline was stored')
        await assertStillServing(server)
      })

      test('an upload that is not multipart answers 415, an empty multipart 400, an unknown kind 400', async () => {
        const json = await api(server, '/upload', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
        await assertRejected(json, 415, 'unsupported_media_type')
        const empty = new FormData()
        empty.append('kind', 'user')
        await assertRejected(await api(server, '/upload', { method: 'POST', body: empty }), 400, 'invalid_request', 'no file')
        const badKind = new FormData()
        badKind.append('kind', 'root')
        badKind.append('file', new Blob(['x']), 'x.txt')
        await assertRejected(await api(server, '/upload', { method: 'POST', body: badKind }), 400, 'invalid_request', 'unknown kind')
        await assertStillServing(server)
      })
    })

    describe('odd output and routes', () => {
      test('invalid UTF-8 written by Python (sys.stdout.buffer.write(b"\\xff\\xfe ok")) answers 200 with valid JSON', async () => {
        const response = await postExec(server, JSON.stringify({ lang: 'py', code: 'import sys\nsys.stdout.buffer.write(b"\\xff\\xfe ok")\nsys.stderr.buffer.write(b"\\xc3(")' }))
        assert.equal(response.status, 200)
        const body = await response.json() as Json
        assert.match(body.stdout, /^\uFFFD+ ok$/)
        assert.match(body.stderr, /^\uFFFD\(/)
        assert.equal(body.status, 'ok')
        await assertStillServing(server)
      })

      test('invalid UTF-8 written by bash (printf \'\\xff\') answers 200 with valid JSON', async () => {
        const response = await postExec(server, JSON.stringify({ lang: 'bash', code: "printf '\\xff'; printf 'tail'" }))
        assert.equal(response.status, 200)
        const body = await response.json() as Json
        assert.equal(body.stdout, '\uFFFDtail')
        await assertStillServing(server)
      })

      test('a route that does not exist answers 404 not_found, at / and /v1', async () => {
        for (const url of [`${server.baseUrl}/no-such-route`, `${server.apiUrl}/no-such-route`, `${server.apiUrl}/exec/extra/segments`, `${server.baseUrl}/v2/exec`]) {
          const response = await fetch(url, { headers: { 'x-api-key': server.apiKey } })
          await assertRejected(response, 404, 'not_found', url)
        }
        await assertStillServing(server)
      })

      test('GET /exec answers 404 or 405 with a JSON error', async () => {
        const response = await api(server, '/exec')
        assert.ok([404, 405].includes(response.status), `GET /exec answered ${response.status}`)
        await assertRejected(response, response.status, ['not_found', 'method_not_allowed'])
        await assertStillServing(server)
      })

      test('a burst of 20 mixed bad requests at once all answer 4xx, then exec and /health still work', async () => {
        const { sessionId, fileId } = await uploadFile(server, 'burst.txt', 'b', 'user-1')
        const bad: Array<() => Promise<Response>> = [
          () => postExec(server, '{"lang":'),
          () => postExec(server, '[]'),
          () => postExec(server, JSON.stringify({ lang: 'py' })),
          () => postExec(server, JSON.stringify({ lang: 'py', code: 1 })),
          () => postExec(server, JSON.stringify({ lang: 'cobol', code: 'DISPLAY 1' })),
          () => postExec(server, JSON.stringify({ lang: 'py', code: '#'.repeat(2 * 1024 * 1024) })),
          () => postExec(server, JSON.stringify({ lang: 'py', code: 'print(1)' }), 'text/plain'),
          () => postExec(server, JSON.stringify({ lang: 'py', code: 'print(1)', files: [{ id: SOME_ID, storage_session_id: SOME_ID, name: 'x' }] })),
          () => postExec(server, JSON.stringify({ lang: 'py', code: 'print(1)', files: [{ id: fileId, storage_session_id: sessionId, name: '../x' }] })),
          () => postExec(server, JSON.stringify({ lang: 'py', code: 'a\u0000' })),
          () => postExec(server, '{"lang":"py","code":"\\ud800"}'),
          () => api(server, '/download/abc/def'),
          () => api(server, `/download/${SOME_ID}/${SOME_ID}`),
          () => api(server, '/download/..%2F..%2Fetc/passwd'),
          () => api(server, `/sessions/${SOME_ID}/objects/nope`),
          () => api(server, '/exec'),
          () => api(server, '/nowhere'),
          () => uploadNamed(server, '../../escape.txt'),
          () => fetch(`${server.apiUrl}/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }),
          () => postExec(server, JSON.stringify({ lang: 'py', code: 'print(1)' }), 'application/x-www-form-urlencoded'),
        ]
        assert.equal(bad.length, 20)
        const responses = await Promise.all(bad.map(async (send) => await send()))
        for (const [index, response] of responses.entries()) {
          const text = await response.text()
          assert.ok(response.status >= 400 && response.status < 500, `request ${index} answered ${response.status}: ${text}`)
          const body = JSON.parse(text) as Json
          assert.equal(typeof body.error, 'string', `request ${index}`)
          assert.ok(typeof body.message === 'string' && body.message.length > 0, `request ${index}`)
        }
        await assertStillServing(server)
        const health = await fetch(`${server.apiUrl}/health`)
        assert.equal(health.status, 200)
        assert.equal((await health.json() as Json).status, 'ok')
      })
    })
  })
}

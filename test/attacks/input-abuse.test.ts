import assert from 'node:assert/strict'
import net from 'node:net'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import { assertStillServing, describeRun, rssBytes, run, serverPid, startAttackServer, type Json } from './helpers.ts'

/**
 * Abuse of the HTTP surface rather than of the jail: oversized and slow requests, odd encodings and
 * content types. Each is refused with a 4xx (never a 5xx) or handled, and the server stays healthy.
 * The plain 4xx shapes are test/e2e/bad-input.test.ts; these focus on abuse and on staying up.
 * The server runs with MAX_BODY_MB=1 and MAX_UPLOAD_MB=1.
 */

const MiB = 1024 * 1024

async function postExecRaw (server: RunningServer, body: string | Uint8Array | ReadableStream, contentType: string | null = 'application/json'): Promise<{ status: number, text: string }> {
  const headers: Record<string, string> = {}
  if (contentType !== null) headers['content-type'] = contentType
  const init: RequestInit & { duplex?: 'half' } = { method: 'POST', headers, body }
  if (body instanceof ReadableStream) init.duplex = 'half'
  const response = await api(server, '/exec', init)
  return { status: response.status, text: await response.text() }
}

/** A 4xx answer with the JSON error shape `{error, message}`. */
function assertClientError (answer: { status: number, text: string }, statuses: number[], what: string): Json {
  assert.ok(statuses.includes(answer.status), `${what}: answered ${answer.status} ${answer.text.slice(0, 300)}`)
  const body = JSON.parse(answer.text) as Json
  assert.equal(typeof body.error, 'string', what)
  assert.ok(String(body.message).length > 0, what)
  return body
}

/** Opens a raw TCP connection to the server and writes `head` at once. */
async function openRaw (server: RunningServer, head: string): Promise<net.Socket> {
  const url = new URL(server.baseUrl)
  const socket = net.connect(Number(url.port), url.hostname)
  socket.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  socket.write(head)
  return socket
}

async function timed<T> (fn: () => Promise<T>): Promise<{ value: T, ms: number }> {
  const started = performance.now()
  const value = await fn()
  return { value, ms: performance.now() - started }
}

for (const driver of availableDrivers()) {
  describe(`input abuse on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer

    before(async () => {
      server = await startAttackServer(suite, driver, { MAX_BODY_MB: '1', MAX_UPLOAD_MB: '1' })
    })

    describe('size', () => {
      test('a JSON body just over MAX_BODY_MB=1 answers 413 payload_too_large; one just under runs', async () => {
        const over = JSON.stringify({ lang: 'py', code: '#'.repeat(MiB) + '\nprint(1)' })
        const refused = await postExecRaw(server, over)
        assert.equal(assertClientError(refused, [413], 'over MAX_BODY_MB').error, 'payload_too_large')
        const under = JSON.stringify({ lang: 'py', code: '#'.repeat(MiB - 200) + '\nprint(1)' })
        const accepted = await postExecRaw(server, under)
        assert.equal(accepted.status, 200, accepted.text.slice(0, 300))
        assert.equal((JSON.parse(accepted.text) as Json).stdout, '1\n', 'the control: a body under the limit runs')
        await assertStillServing(server)
      })

      test('a chunked JSON body of 3 MiB without Content-Length answers 413 and the server\'s RSS grows by less than 50 MiB', async () => {
        const rssBefore = rssBytes(serverPid(server))
        let sent = 0
        const stream = new ReadableStream<Uint8Array>({
          pull (controller) {
            if (sent === 0) controller.enqueue(new TextEncoder().encode('{"lang":"py","code":"'))
            if (sent >= 3 * MiB) {
              controller.enqueue(new TextEncoder().encode('"}'))
              controller.close()
              return
            }
            controller.enqueue(new Uint8Array(64 * 1024).fill(0x23))
            sent += 64 * 1024
          },
        })
        const refused = await postExecRaw(server, stream).catch((error: Error) => ({ status: 0, text: error.message }))
        // the server may also cut the connection once the limit is passed
        if (refused.status !== 0) assertClientError(refused, [413], 'chunked body over MAX_BODY_MB')
        const growth = rssBytes(serverPid(server)) - rssBefore
        assert.ok(growth < 50 * MiB, `the server's RSS grew by ${Math.round(growth / MiB)} MiB`)
        await assertStillServing(server)
      })

      test('a 2 MiB multipart upload over MAX_UPLOAD_MB=1 answers 413', async () => {
        const form = new FormData()
        form.append('kind', 'user')
        form.append('file', new Blob([new Uint8Array(2 * MiB).fill(0x41)]), 'big.bin')
        const response = await api(server, '/upload', { method: 'POST', body: form })
        assertClientError({ status: response.status, text: await response.text() }, [413], 'upload over MAX_UPLOAD_MB')
        await assertStillServing(server)
      })

      test('a 64 KiB X-API-Key header answers 431 and the server keeps serving', async (t) => {
        const response = await fetch(`${server.apiUrl}/health`, { headers: { 'x-api-key': 'k'.repeat(64 * 1024) } })
          .catch((error: Error) => ({ status: 0, error }))
        assert.ok(response.status === 431 || response.status === 0, `answered ${response.status}`)
        t.diagnostic(`answered ${response.status === 0 ? 'with a closed connection' : response.status}`)
        await assertStillServing(server)
      })

      test('JSON nested 400 000 levels deep (800 KB) answers 200 or 4xx, never 5xx', async () => {
        const depth = 400_000
        const body = `{"lang":"py","code":"print(1)","nested":${'['.repeat(depth)}${']'.repeat(depth)}}`
        const answer = await postExecRaw(server, body)
        assert.ok(answer.status === 200 || (answer.status >= 400 && answer.status < 500), `answered ${answer.status}: ${answer.text.slice(0, 300)}`)
        await assertStillServing(server)
      })
    })

    describe('slow clients', () => {
      test('50 slow-loris connections (25 dripping headers, 25 dripping a body, one byte a second) do not delay /health or an execution past 2 s', async (t) => {
        const sockets: net.Socket[] = []
        try {
          for (let i = 0; i < 25; i++) {
            sockets.push(await openRaw(server, `POST /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-${i}: `))
            sockets.push(await openRaw(server, 'POST /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
              `X-API-Key: ${server.apiKey}\r\nContent-Length: 100000\r\n\r\n{"lang":"py","code":"`))
          }
          const drip = setInterval(() => { for (const socket of sockets) if (!socket.destroyed) socket.write('a') }, 1000)
          try {
            await sleep(2500)
            for (let round = 0; round < 2; round++) {
              const health = await timed(async () => await api(server, '/health'))
              assert.equal(health.value.status, 200)
              assert.ok(health.ms < 2000, `/health took ${Math.round(health.ms)} ms`)
              const execution = await timed(async () => await run(server, 'py', 'print(6*7)'))
              assert.equal(execution.value.body.stdout, '42\n')
              assert.ok(execution.ms < 2000, `an execution took ${Math.round(execution.ms)} ms`)
              t.diagnostic(`round ${round}: /health ${health.ms.toFixed(0)} ms, execution ${execution.ms.toFixed(0)} ms`)
              await sleep(1000)
            }
            t.diagnostic(`${sockets.filter((socket) => !socket.destroyed).length} of 50 slow connections still open`)
          } finally {
            clearInterval(drip)
          }
        } finally {
          for (const socket of sockets) socket.destroy()
        }
        await assertStillServing(server)
      })
    })

    describe('encodings and content types', () => {
      test('NUL bytes and lone surrogates in code, args or an input name answer 400, never 5xx', async () => {
        const bodies = [
          '{"lang":"py","code":"print(1)\\u0000"}',
          '{"lang":"py","code":"print(\\"\\ud800\\")"}',
          '{"lang":"py","code":"print(\\"\\udc00x\\")"}',
          '{"lang":"bash","code":"echo $1","args":["a\\u0000b"]}',
          '{"lang":"bash","code":"echo $1","args":["\\ud83d"]}',
          `{"lang":"py","code":"print(1)","files":[{"id":"${'A'.repeat(21)}","storage_session_id":"${'A'.repeat(21)}","name":"a\\u0000b"}]}`,
        ]
        for (const body of bodies) {
          assertClientError(await postExecRaw(server, body), [400], body)
        }
        await assertStillServing(server)
      })

      test('invalid UTF-8 bytes inside the request\'s code are decoded as U+FFFD and answered 200 with valid JSON', async () => {
        const body = Buffer.concat([Buffer.from('{"lang":"py","code":"print(\'ok\')  # '), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')])
        const answer = await postExecRaw(server, body)
        assert.equal(answer.status, 200, answer.text.slice(0, 300))
        assert.equal((JSON.parse(answer.text) as Json).stdout, 'ok\n')
        await assertStillServing(server)
      })

      test('invalid UTF-8 in the program\'s stdout and stderr (Python and Bash) answers 200 with valid JSON and U+FFFD in place of the bad bytes', async () => {
        for (const [lang, source] of [
          ['py', 'import sys\nsys.stdout.buffer.write(b"\\xff\\xfe \\xc3( \\xed\\xa0\\x80 ok\\n")\nsys.stderr.buffer.write(b"\\x80\\xbf err\\n")\n'],
          ['bash', 'printf "\\xff\\xfe \\xc3( \\xed\\xa0\\x80 ok\\n"; printf "\\x80\\xbf err\\n" >&2'],
        ] as const) {
          const response = await api(server, '/exec', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ lang, code: source }),
          })
          const raw = Buffer.from(await response.arrayBuffer())
          assert.equal(response.status, 200)
          const text = new TextDecoder('utf-8', { fatal: true }).decode(raw) // throws on invalid UTF-8
          const body = JSON.parse(text) as Json
          assert.equal(body.status, 'ok', `${lang}: ${describeRun(body)}`)
          assert.match(body.stdout, /\uFFFD.* ok\n$/)
          assert.ok(String(body.stdout).isWellFormed())
          assert.match(body.stderr, /\uFFFD err\n$/)
        }
        await assertStillServing(server)
      })

      test('wrong content types on /exec and /upload answer 4xx (415 or 400), never 5xx; 2000 parameters after application/json are harmless', async () => {
        const json = '{"lang":"py","code":"print(1)"}'
        for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'image/png', null, '']) {
          const answer = await postExecRaw(server, json, contentType)
          assert.ok(answer.status >= 400 && answer.status < 500, `${String(contentType)}: answered ${answer.status}`)
        }
        // still JSON, however many parameters follow: parsed as such, promptly
        const parameters = await timed(async () => await postExecRaw(server, json, 'application/json; ' + 'p=x; '.repeat(2000)))
        assert.ok(parameters.value.status === 200 || (parameters.value.status >= 400 && parameters.value.status < 500), `answered ${parameters.value.status}`)
        assert.ok(parameters.ms < 2000, `took ${Math.round(parameters.ms)} ms`)
        for (const contentType of ['application/json', 'text/plain', 'multipart/form-data']) {
          const response = await api(server, '/upload', { method: 'POST', headers: { 'content-type': contentType }, body: '{"file":"x"}' })
          assert.ok(response.status >= 400 && response.status < 500, `/upload with ${contentType}: answered ${response.status}`)
          await response.arrayBuffer()
        }
        await assertStillServing(server)
      })

      test('__proto__ and constructor.prototype keys in the body answer 400 and pollute nothing', async () => {
        for (const body of [
          '{"lang":"py","code":"print(1)","__proto__":{"polluted":"yes"}}',
          '{"lang":"py","code":"print(1)","constructor":{"prototype":{"polluted":"yes"}}}',
          '{"lang":"py","code":"print(1)","files":[{"__proto__":{"storage_session_id":"AAAAAAAAAAAAAAAAAAAAA"},"id":"AAAAAAAAAAAAAAAAAAAAA","name":"x"}]}',
        ]) {
          const answer = await postExecRaw(server, body)
          assert.ok(answer.status === 400 || answer.status === 404, `${body}: answered ${answer.status} ${answer.text.slice(0, 200)}`)
        }
        const { body } = await run(server, 'py', 'print(1)')
        assert.ok(!JSON.stringify(body).includes('polluted'))
        await assertStillServing(server)
      })
    })
  })
}

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { before, describe, test } from 'node:test'
import * as agents from '@librechat/agents'
import { invoke, type CodeTool } from '../helpers/librechat.ts'
import { badToken, bearer, createSigningKey, mintToken, type BadTokenKind, type SigningKey } from '../helpers/jwt.ts'
import { availableDrivers, it, startServer, suiteContext, TEST_TIMEOUT_MS, type Driver, type RunningServer } from '../helpers/server.ts'

/**
 * Authentication against the real server, the way every LibreChat generation authenticates (spec §2):
 * `X-API-Key`, a per-user LibreChat JWT in `Authorization: Bearer` (Ed25519 or RSA), or nothing at all
 * on loopback with AUTH=none. Tokens go through the agents SDK's own tools, so a refusal is checked as
 * the model would see it too.
 */

const REPO = path.resolve(import.meta.dirname, '..', '..')
const NOT_AUTHORIZED = 'Code execution is not authorized. Verify access before trying again.'
const USER = '6650c0ffee0123456789abcd'

/** The SDK factories with a caller-chosen `authHeaders` (the helpers' tools always send the API key). */
interface ToolParams {
  baseUrl: string
  authHeaders: Record<string, string> | (() => Promise<Record<string, string>>)
  user_id?: string
}
const sdk = agents as unknown as {
  createCodeExecutionTool (params: ToolParams): CodeTool
  createBashExecutionTool (params: ToolParams): CodeTool
}

/** POST /v1/exec with exactly the headers given (no API key added). */
async function postExec (server: RunningServer, headers: Record<string, string>, code = 'print(6 * 7)'): Promise<{ status: number, body: Record<string, unknown> }> {
  const response = await fetch(`${server.apiUrl}/exec`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': 'LibreChat/1.0', ...headers },
    body: JSON.stringify({ lang: 'py', code, user_id: USER }),
  })
  return { status: response.status, body: await response.json() as Record<string, unknown> }
}

/** LibreChat always adds the profile header to its auth headers (spec §2.1). */
function librechatHeaders (auth: Record<string, string>): Record<string, string> {
  return { ...auth, 'X-CodeAPI-Expected-Profile': 'default' }
}

function assertUnauthorized (result: { status: number, body: Record<string, unknown> }, reason: RegExp): void {
  assert.equal(result.status, 401, `expected 401, got ${result.status}: ${JSON.stringify(result.body)}`)
  assert.deepEqual(Object.keys(result.body).sort(), ['error', 'message'], JSON.stringify(result.body))
  assert.equal(result.body.error, 'unauthorized')
  assert.match(String(result.body.message), reason)
}

/** The reason a refused token's message must name. */
const REASONS: Record<BadTokenKind, RegExp> = {
  expired: /expired/,
  'not yet valid': /\bnbf\b/,
  'wrong audience': /\baud\b/,
  'wrong issuer': /\biss\b/,
  'lives too long': /longer than 300 s/,
  'signed by another key': /not signed by a known key/,
  'alg none': /algorithm/,
  garbage: /malformed/,
}
const BAD_TOKENS = Object.keys(REASONS) as BadTokenKind[]
const TOKEN_NAMES: Record<BadTokenKind, string> = {
  expired: 'an expired token',
  'not yet valid': 'a token not valid yet (nbf 2 min ahead)',
  'wrong audience': 'a token for another audience',
  'wrong issuer': 'a token from another issuer',
  'lives too long': 'a token living longer than 300 s',
  'signed by another key': 'a token signed by an unknown key',
  'alg none': 'an unsigned alg:none token',
  garbage: 'a garbage token',
}

async function runsPython (tool: CodeTool): Promise<void> {
  const result = await invoke(tool, { lang: 'py', code: 'import sys\nprint(6 * 7, sys.argv[1:])', args: ['a b'] })
  assert.equal(result.content, 'stdout:\n42 [\'a b\']')
}

/** Start `src/server.ts` with a configuration it must refuse: it exits non-zero at once, saying why. */
async function startRefused (driver: Driver, env: Record<string, string>): Promise<{ code: number | null, output: string }> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'warden-test-data-'))
  const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(CODE_API_KEY|JWT_|AUTH$)/.test(name)))
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: REPO,
    env: { ...base, PORT: '0', DATA_DIR: dataDir, JAIL: driver, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  try {
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(null) }, 30_000)
      child.once('exit', (exitCode) => { clearTimeout(timer); resolve(exitCode) })
    })
    return { code, output }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
}

for (const driver of availableDrivers()) {
  describe(`authentication on ${driver}`, () => {
    describe('AUTH=api-key,jwt with an Ed25519 public key (PEM text)', () => {
      let server: RunningServer
      let key: SigningKey
      const t = suiteContext()
      before(async () => {
        key = await createSigningKey('EdDSA')
        server = await startServer(t, { driver, env: { AUTH: 'api-key,jwt', JWT_PUBLIC_KEYS: key.publicPem } })
      })
      const token = async () => await mintToken(key, { userId: USER })
      const tools = (authHeaders: ToolParams['authHeaders']) => ({
        code: sdk.createCodeExecutionTool({ baseUrl: server.apiUrl, authHeaders, user_id: USER }),
        bash: sdk.createBashExecutionTool({ baseUrl: server.apiUrl, authHeaders, user_id: USER }),
      })

      it('execute_code with Authorization: Bearer <LibreChat JWT> runs the code', async () => {
        await runsPython(tools(librechatHeaders(bearer(await token()))).code)
      })

      it('bash_tool with Authorization: Bearer <LibreChat JWT> runs the command', async () => {
        const result = await invoke(tools(librechatHeaders(bearer(await token()))).bash, { command: 'echo "jwt $((6 * 7))"' })
        assert.equal(result.content, 'stdout:\njwt 42')
      })

      it('authHeaders as a function minting a fresh token per request (as LibreChat does) runs code on every call', async () => {
        let minted = 0
        const tool = tools(async () => { minted++; return librechatHeaders(bearer(await token())) }).code
        await runsPython(tool)
        await runsPython(tool)
        assert.equal(minted, 2)
      })

      it('execute_code and bash_tool with X-API-Key run code on the same server', async () => {
        const { code, bash } = tools(librechatHeaders({ 'X-API-Key': server.apiKey }))
        await runsPython(code)
        assert.equal((await invoke(bash, { command: 'echo key' })).content, 'stdout:\nkey')
      })

      it('the scheme name is case-insensitive: "bearer <token>" is accepted', async () => {
        const { status, body } = await postExec(server, { Authorization: `bearer ${await token()}` })
        assert.equal(status, 200, JSON.stringify(body))
        assert.equal(body.stdout, '42\n')
      })

      it('no credentials: 401 unauthorized naming both accepted methods', async () => {
        const result = await postExec(server, {})
        assertUnauthorized(result, /X-API-Key/)
        assert.match(String(result.body.message), /Authorization: Bearer/)
      })

      it('a wrong API key: 401 unauthorized naming X-API-Key', async () => {
        assertUnauthorized(await postExec(server, { 'X-API-Key': `${server.apiKey}-wrong` }), /API key in X-API-Key is not valid/)
      })

      it('GET /health needs no credentials', async () => {
        const response = await fetch(`${server.apiUrl}/health`)
        assert.equal(response.status, 200)
        assert.equal((await response.json() as { status: string }).status, 'ok')
      })

      for (const kind of BAD_TOKENS) {
        it(`${TOKEN_NAMES[kind]}: POST /exec answers 401 {error: "unauthorized", message} naming the reason`, async () => {
          assertUnauthorized(await postExec(server, bearer(await badToken(kind, key, USER))), REASONS[kind])
        })
      }

      it('a refused token is refused on the file routes too (upload, download, probe, list, delete)', async () => {
        const auth = bearer(await badToken('expired', key, USER))
        const sid = 'AAAAAAAAAAAAAAAAAAAAA'
        const form = new FormData()
        form.append('file', new Blob(['x']), 'x.txt')
        const responses = await Promise.all([
          fetch(`${server.apiUrl}/upload`, { method: 'POST', headers: auth, body: form }),
          fetch(`${server.apiUrl}/download/${sid}/${sid}`, { headers: auth }),
          fetch(`${server.apiUrl}/sessions/${sid}/objects/${sid}`, { headers: auth }),
          fetch(`${server.apiUrl}/files/${sid}`, { headers: auth }),
          fetch(`${server.apiUrl}/files/${sid}/${sid}`, { method: 'DELETE', headers: auth }),
        ])
        for (const response of responses) {
          assert.equal(response.status, 401, `${response.url}: ${response.status}`)
          assert.equal((await response.json() as { error: string }).error, 'unauthorized')
        }
      })

      it('a refused token is not rescued by a valid X-API-Key on the same request', async () => {
        const result = await postExec(server, { ...bearer(await badToken('signed by another key', key, USER)), 'X-API-Key': server.apiKey })
        assertUnauthorized(result, /not signed by a known key/)
      })

      it(`through execute_code and bash_tool, every refused token throws "${NOT_AUTHORIZED}"`, async () => {
        for (const kind of BAD_TOKENS) {
          const { code, bash } = tools(librechatHeaders(bearer(await badToken(kind, key, USER))))
          await assert.rejects(invoke(code, { lang: 'py', code: 'print(1)' }), (error: Error) => {
            assert.equal(error.name, 'CodeApiRequestError', `${kind}: ${error.name}`)
            assert.ok(error.message.includes(NOT_AUTHORIZED), `${kind}: ${error.message}`)
            return true
          })
          await assert.rejects(invoke(bash, { command: 'echo 1' }), (error: Error) => {
            assert.ok(error.message.includes(NOT_AUTHORIZED), `${kind} (bash_tool): ${error.message}`)
            return true
          })
        }
      })
    })

    describe('AUTH=jwt with a directory holding an Ed25519 and an RSA public key', () => {
      let server: RunningServer
      let ed25519: SigningKey
      let rsa: SigningKey
      const t = suiteContext()
      before(async () => {
        ed25519 = await createSigningKey('EdDSA')
        rsa = await createSigningKey('RS256')
        const keyDir = await mkdtemp(path.join(os.tmpdir(), 'warden-test-keys-'))
        t.after(async () => { await rm(keyDir, { recursive: true, force: true }) })
        await writeFile(path.join(keyDir, 'a-librechat-ed25519.pem'), ed25519.publicPem)
        await writeFile(path.join(keyDir, 'b-librechat-rsa.pem'), rsa.publicPem)
        server = await startServer(t, { driver, env: { AUTH: 'jwt', JWT_PUBLIC_KEYS: keyDir } })
      })

      it('the (valid) API key is refused with 401: AUTH=jwt accepts only LibreChat tokens', async () => {
        assertUnauthorized(await postExec(server, { 'X-API-Key': server.apiKey }), /Authorization: Bearer/)
      })

      it('the API key through execute_code: "Code execution is not authorized…"', async () => {
        const tool = sdk.createCodeExecutionTool({ baseUrl: server.apiUrl, authHeaders: { 'X-API-Key': server.apiKey } })
        await assert.rejects(invoke(tool, { lang: 'py', code: 'print(1)' }), (error: Error) => error.message.includes(NOT_AUTHORIZED))
      })

      it('an EdDSA token (Ed25519 key) runs code through execute_code', async () => {
        const headers = librechatHeaders(bearer(await mintToken(ed25519, { userId: USER })))
        await runsPython(sdk.createCodeExecutionTool({ baseUrl: server.apiUrl, authHeaders: headers, user_id: USER }))
      })

      it('an RS256 token (RSA key) runs code through execute_code', async () => {
        const token = await mintToken(rsa, { userId: USER })
        assert.equal(JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString()).alg, 'RS256')
        const raw = await postExec(server, bearer(token))
        assert.equal(raw.status, 200, `POST /exec with an RS256 token: ${raw.status} ${JSON.stringify(raw.body)}`)
        await runsPython(sdk.createCodeExecutionTool({ baseUrl: server.apiUrl, authHeaders: librechatHeaders(bearer(token)), user_id: USER }))
      })

      it('an RS256 token signed by an RSA key that is not configured: 401 naming the key', async () => {
        assertUnauthorized(await postExec(server, bearer(await badToken('signed by another key', rsa, USER))), /not signed by a known key/)
      })
    })

    describe('AUTH=api-key,jwt with PEM text holding an RSA and then an Ed25519 public key', () => {
      let server: RunningServer
      let ed25519: SigningKey
      let rsa: SigningKey
      const t = suiteContext()
      before(async () => {
        ed25519 = await createSigningKey('EdDSA')
        rsa = await createSigningKey('RS256')
        server = await startServer(t, { driver, env: { AUTH: 'api-key,jwt', JWT_PUBLIC_KEYS: `${rsa.publicPem}\n${ed25519.publicPem}` } })
      })

      it('an RS256 token runs code', async () => {
        const { status, body } = await postExec(server, bearer(await mintToken(rsa, { userId: USER })))
        assert.equal(status, 200, JSON.stringify(body))
        assert.equal(body.stdout, '42\n')
      })

      it('an EdDSA token runs code', async () => {
        const { status, body } = await postExec(server, bearer(await mintToken(ed25519, { userId: USER })))
        assert.equal(status, 200, `POST /exec with an EdDSA token: ${status} ${JSON.stringify(body)}`)
        assert.equal(body.stdout, '42\n')
      })

      it('the API key still runs code', async () => {
        const { status, body } = await postExec(server, { 'X-API-Key': server.apiKey })
        assert.equal(status, 200, JSON.stringify(body))
      })
    })

    describe('AUTH=none', () => {
      let server: RunningServer
      const t = suiteContext()
      before(async () => {
        server = await startServer(t, { driver, env: { AUTH: 'none' } })
      })

      it('on loopback, POST /exec without credentials runs the code', async () => {
        const { status, body } = await postExec(server, {})
        assert.equal(status, 200, JSON.stringify(body))
        assert.equal(body.stdout, '42\n')
      })

      it('execute_code with no auth headers (LibreChat 0.8.6+ without JWT) runs the code', async () => {
        await runsPython(sdk.createCodeExecutionTool({ baseUrl: server.apiUrl, authHeaders: {}, user_id: USER }))
      })

      it('upload and download without credentials round-trip the bytes', async () => {
        const form = new FormData()
        form.append('kind', 'user')
        form.append('id', USER)
        form.append('file', new Blob(['no auth here\n']), 'open.txt')
        const uploaded = await fetch(`${server.apiUrl}/upload`, { method: 'POST', headers: { 'User-Id': USER }, body: form })
        assert.equal(uploaded.status, 200)
        const { storage_session_id: sid, files } = await uploaded.json() as { storage_session_id: string, files: Array<{ fileId: string }> }
        const downloaded = await fetch(`${server.apiUrl}/download/${sid}/${files[0]?.fileId}?kind=user&id=${USER}`)
        assert.equal(downloaded.status, 200)
        assert.equal(await downloaded.text(), 'no auth here\n')
      })
    })

    describe('AUTH=none on a non-loopback address', () => {
      it('HOST=0.0.0.0 without ALLOW_UNAUTHENTICATED_REMOTE: the server refuses to start, naming AUTH and the way out', async () => {
        const { code, output } = await startRefused(driver, { AUTH: 'none', HOST: '0.0.0.0' })
        assert.equal(code, 1, `exit code ${code}, output:\n${output.slice(-2000)}`)
        assert.match(output, /\bAUTH\b/)
        assert.match(output, /ALLOW_UNAUTHENTICATED_REMOTE=true/)
        assert.doesNotMatch(output, /Warden is ready/)
      })

      test('HOST=0.0.0.0 with ALLOW_UNAUTHENTICATED_REMOTE=true: the server starts and runs code without credentials', { timeout: TEST_TIMEOUT_MS }, async (t) => {
        const server = await startServer(t, { driver, env: { AUTH: 'none', HOST: '0.0.0.0', ALLOW_UNAUTHENTICATED_REMOTE: 'true' } })
        const port = new URL(server.baseUrl).port
        const response = await fetch(`http://127.0.0.1:${port}/v1/exec`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ lang: 'bash', code: 'echo remote-ok' }),
        })
        assert.equal(response.status, 200)
        assert.equal((await response.json() as { stdout: string }).stdout, 'remote-ok\n')
      })
    })
  })
}

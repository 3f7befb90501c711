import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import fc from 'fast-check'
import { availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import { startAttackServer } from '../attacks/helpers.ts'
import { assertSettled, health } from '../attacks/settled.ts'
import { bodyFor, validValue, type JsonSchema } from './schema-arbitrary.ts'
import { FUZZ } from './settings.ts'

/**
 * Every route the server publishes (its OpenAPI, made from the routes' zod schemas), fuzzed with bodies
 * generated from that schema and one mutation away from it, and path parameters from the dictionary: each
 * answer is a 2xx or 3xx, or a 4xx whose body is the JSON error `{error, message}`; never a 5xx, never
 * a hang (every request has a deadline of the time limit plus a grace), and afterwards the pool is whole.
 * A route added later is fuzzed without a change here. Seeded (FUZZ_SEED); `npm run fuzz` runs longer.
 */

interface Operation { method: string, path: string, body: JsonSchema | null, params: string[] }

/** Routes that only start what other tests start on purpose (a kernel per call) or take a form, not JSON. */
const SKIPPED = new Set(['POST /api/kernels', 'POST /login'])
const EXEC_TIMEOUT_MS = 2000
const REQUEST_DEADLINE_MS = EXEC_TIMEOUT_MS + 15_000

async function operations (server: RunningServer): Promise<Operation[]> {
  const spec = await (await fetch(`${server.baseUrl}/docs/json`)).json() as { paths: Record<string, Record<string, any>> }
  const found: Operation[] = []
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      if (SKIPPED.has(`${method.toUpperCase()} ${path.replace(/^\/v1/, '')}`)) continue
      const body = operation.requestBody?.content?.['application/json']?.schema as JsonSchema | undefined
      const params = ((operation.parameters ?? []) as Array<{ in: string, name: string }>).filter((p) => p.in === 'path').map((p) => p.name)
      found.push({ method: method.toUpperCase(), path, body: body ?? null, params })
    }
  }
  return found
}

interface Sent { operation: Operation, url: string, body: unknown }

function requests (server: RunningServer, all: Operation[]): fc.Arbitrary<Sent> {
  // routes with a body have the most to get wrong
  return fc.oneof(...all.map((operation) => ({
    weight: operation.body === null ? 1 : 6,
    arbitrary: fc.record({
      body: operation.body === null ? fc.constant(undefined) : bodyFor(operation.body),
      params: fc.tuple(...operation.params.map(() => validValue({ type: 'string', maxLength: 40 }) as fc.Arbitrary<string>)),
      user: fc.constantFrom('fuzz-a', 'fuzz-b', ''),
    }).map(({ body, params, user }) => {
      let path = operation.path
      operation.params.forEach((name, index) => { path = path.replace(`{${name}}`, percentEncode(params[index] ?? '') || '%20') })
      return { operation, url: `${server.baseUrl}${path}${user === '' ? '' : `?user_id=${user}`}`, body }
    })
  })))
}

/** Every byte but the unreserved ones percent-encoded (a lone surrogate becomes U+FFFD, as a client would send it). */
function percentEncode (text: string): string {
  return [...Buffer.from(text, 'utf8')].map((byte) => /[A-Za-z0-9_.~-]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).padStart(2, '0')}`).join('')
}

/** Requests every run begins with: a tool-calling run that starts and ends, one that pauses and is left to expire. */
function examples (server: RunningServer, all: Operation[]): Array<[Sent]> {
  const ptc = all.find((operation) => operation.path === '/exec/programmatic' && operation.method === 'POST')
  assert.ok(ptc, 'the OpenAPI lists POST /exec/programmatic')
  const url = `${server.baseUrl}${ptc.path}`
  return [
    [{ operation: ptc, url, body: { code: 'print(1)', tools: [{ name: 'lookup' }] } }],
    [{ operation: ptc, url, body: { code: 'print(await lookup(q=1))', tools: [{ name: 'lookup' }] } }],
  ]
}

async function send (server: RunningServer, { operation, url, body }: Sent): Promise<{ status: number, text: string }> {
  const response = await fetch(url, {
    method: operation.method,
    headers: { 'x-api-key': server.apiKey, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: 'manual',
    signal: AbortSignal.timeout(REQUEST_DEADLINE_MS),
  })
  return { status: response.status, text: await response.text() }
}

for (const driver of availableDrivers()) {
  describe(`fuzzing every route's body (${driver}, seed ${FUZZ.seed}, ${FUZZ.routeRuns} requests)`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startAttackServer(suite, driver, { EXEC_TIMEOUT_MS: String(EXEC_TIMEOUT_MS), POOL_MIN: '2', POOL_MAX: '4', PTC_PAUSE_TIMEOUT: '2s' })
    })

    test('every generated request is answered 2xx, 3xx or a 4xx JSON error; never a 5xx or a hang; the pool is whole after', { timeout: FUZZ.timeoutMs }, async () => {
      const all = await operations(server)
      assert.ok(all.some((operation) => operation.path === '/exec' && operation.body !== null), 'the OpenAPI lists POST /exec with its body')
      assert.ok(all.length >= 20, `only ${all.length} routes found`)
      const start = await health(server)
      const statuses = new Map<string, number>()
      await fc.assert(fc.asyncProperty(requests(server, all), async (sent) => {
        const { status, text } = await send(server, sent)
        const key = `${sent.operation.method} ${sent.operation.path.replace(/^\/v1/, '')} ${status}`
        statuses.set(key, (statuses.get(key) ?? 0) + 1)
        const where = `${sent.operation.method} ${sent.url} ${JSON.stringify(sent.body)?.slice(0, 300)} -> ${status} ${text.slice(0, 300)}`
        assert.ok(status < 500, where)
        if (status >= 400) {
          const error = JSON.parse(text) as { error?: unknown, message?: unknown }
          assert.equal(typeof error.error, 'string', where)
          assert.equal(typeof error.message, 'string', where)
        }
      }), { seed: FUZZ.seed, numRuns: FUZZ.routeRuns, endOnFailure: true, examples: examples(server, all) })
      // the fuzzer reached the handlers and the jail, not only the validator: some executions ran, some were refused
      const answered = JSON.stringify([...statuses].sort())
      assert.ok(statuses.has('POST /exec 200') && statuses.has('POST /exec 400'), `answers: ${answered}`)
      assert.ok(statuses.has('POST /exec/programmatic 200') && statuses.has('POST /exec/programmatic 400'), `answers: ${answered}`)
      console.log(`# answers (${driver}): ${answered}`)
      await assertSettled(server, start)
    })
  })
}

import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import fc from 'fast-check'
import { availableDrivers, exec, suiteContext, api, type RunningServer } from '../helpers/server.ts'
import { startAttackServer } from '../attacks/helpers.ts'
import { assertSettled, health } from '../attacks/settled.ts'
import { FUZZ } from './settings.ts'

/**
 * Random frame sequences from a worker: the program, in a real jail, writes fast-check's frames to the
 * control socket it inherited (fd 3), under a one-shot execution and under a tool-calling run (where
 * MESSAGE frames are parsed as tool calls), with a true, short, long or absurd length in each header,
 * then exits with any status. Each request gets an answer below 500 within the time limit plus a grace,
 * a normal execution beside it gets exactly its own stdout, the server never exits, and afterwards every
 * slot and live worker is free and /health matches the host. Seeded (FUZZ_SEED), longer under `npm run fuzz`.
 */

const EXEC_TIMEOUT_MS = 2000
const MAX_FRAME_PAYLOAD = 1 << 20
const FRAME_TYPES = [...'+DMJRSOEXFP'].map((letter) => letter.charCodeAt(0))

/** Payloads a worker could plausibly send, and some it could not. */
const payload: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.constantFrom(
    { type: 'tool_calls', calls: [{ id: 'c1', name: 'lookup', input: {} }] },
    { type: 'tool_calls', calls: [{ id: 'c1', name: 'lookup' }, { id: 'c1', name: 'lookup' }] },
    { type: 'tool_calls', calls: [] },
    { type: 'tool_calls', calls: Array.from({ length: 101 }, (_, i) => ({ id: `c${i}`, name: 'lookup' })) },
    { type: 'tool_results', results: [] },
    { exit_code: 0, signal: null, marker: '00'.repeat(16) },
    { name: '../../etc/passwd' },
    { name: 'out.txt' },
    { size: 1e12 },
    { message: 'worker broke' }
  ).map((value) => new TextEncoder().encode(JSON.stringify(value))),
  fc.jsonValue({ maxDepth: 2 }).map((value) => new TextEncoder().encode(JSON.stringify(value)))
)

interface Frame { type: number, length: 'true' | 'short' | 'long' | 'huge' | 'over', payload: Uint8Array }

const frame: fc.Arbitrary<Frame> = fc.record({
  type: fc.oneof({ arbitrary: fc.constantFrom(...FRAME_TYPES), weight: 4 }, { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 }),
  length: fc.constantFrom('true', 'true', 'true', 'short', 'long', 'huge', 'over'),
  payload,
})

function encode (frames: Frame[]): Buffer {
  return Buffer.concat(frames.map(({ type, length, payload: body }) => {
    const header = Buffer.alloc(5)
    header.writeUInt8(type, 0)
    const claimed = { true: body.length, short: Math.max(0, body.length - 1), long: body.length + 7, huge: 0xffffffff, over: MAX_FRAME_PAYLOAD + 1 }[length]
    header.writeUInt32BE(claimed, 1)
    return Buffer.concat([header, body])
  }))
}

const attack = fc.record({
  frames: fc.array(frame, { minLength: 1, maxLength: 6 }),
  stdout: fc.constantFrom('', 'before\n', 'x'.repeat(5000)),
  exit: fc.constantFrom('pass', 'os._exit(0)', 'os._exit(3)', 'time.sleep(5)', 'os.kill(os.getpid(), 9)'),
  programmatic: fc.boolean(),
})

for (const driver of availableDrivers()) {
  describe(`fuzzing the worker's frames (${driver}, seed ${FUZZ.seed}, ${FUZZ.frameRuns} runs)`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startAttackServer(suite, driver, { EXEC_TIMEOUT_MS: String(EXEC_TIMEOUT_MS), POOL_MIN: '3', POOL_MAX: '6', PTC_PAUSE_TIMEOUT: '2s', MAX_CONCURRENT_PER_USER: '0' })
    })

    test('whatever a worker sends, its request is answered below 500, a neighbour gets its own stdout, and the pool is whole after', { timeout: FUZZ.timeoutMs }, async () => {
      const start = await health(server)
      let neighbours = 0
      await fc.assert(fc.asyncProperty(attack, fc.nat(), async ({ frames, stdout, exit, programmatic }, nonce) => {
        const code = `import os, sys, time\nsys.stdout.write(${JSON.stringify(stdout)})\nsys.stdout.flush()\nos.write(3, bytes.fromhex("${encode(frames).toString('hex')}"))\n${exit}\n`
        const token = `neighbour-${nonce}`
        const deadline = AbortSignal.timeout(EXEC_TIMEOUT_MS + 15_000)
        const [attacker, neighbour] = await Promise.all([
          programmatic
            ? api(server, '/exec/programmatic', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code, tools: [{ name: 'lookup' }], user_id: 'attacker' }), signal: deadline })
              .then(async (response) => ({ status: response.status, body: await response.json() as Record<string, unknown> }))
            : exec(server, { lang: 'py', code, user_id: 'attacker' }),
          exec(server, { lang: 'py', code: `print(${JSON.stringify(token)})`, user_id: 'neighbour' }),
        ])
        const where = `${programmatic ? 'tool-calling run' : 'execution'}: ${JSON.stringify(frames.map((f) => [String.fromCharCode(f.type), f.length, Buffer.from(f.payload).toString().slice(0, 80)]))} then ${exit} -> ${attacker.status} ${JSON.stringify(attacker.body).slice(0, 300)}`
        assert.ok(attacker.status < 500, where)
        assert.equal(neighbour.status, 200, where)
        assert.equal(neighbour.body.stdout, `${token}\n`, where)
        neighbours++
      }), { seed: FUZZ.seed, numRuns: FUZZ.frameRuns, endOnFailure: true })
      assert.equal(neighbours, FUZZ.frameRuns)
      assert.equal(server.process.exitCode, null, 'the server exited')
      await assertSettled(server, start)
    })
  })
}

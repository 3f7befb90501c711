import assert from 'node:assert/strict'
import { loadavg } from 'node:os'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import { LIMITS, assertStillServing, assertStoppedBy, code, describeRun, median, run, startAttackServer } from './helpers.ts'

/**
 * Noisy neighbours: one execution holding its whole memory limit and another burning CPU until its
 * timeout must not slow a third, ordinary one by more than 2× (+50 ms for tiny medians). Each answer
 * must also be correct.
 */

const NORMAL = 'print(sum(range(10**6)))'
const EXPECTED = `${499999500000}\n`
const RUNS = 5
const FLOOR_MS = 50
/** this host is shared with other test runs: a comparison is retried before it counts as a failure */
const ATTEMPTS = 3

async function timeNormalRuns (server: RunningServer): Promise<number[]> {
  const times: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const { body, elapsedMs } = await run(server, 'py', NORMAL)
    assert.equal(body.stdout, EXPECTED, describeRun(body))
    assert.equal(body.status, 'ok')
    times.push(elapsedMs)
  }
  return times
}

/**
 * One comparison: the alone median is taken from runs just before and just after the neighbours, so a
 * change of load from outside (this host is shared) moves both sides alike.
 */
async function measureOnce (server: RunningServer): Promise<{ within: boolean, report: string }> {
  const aloneBefore = await timeNormalRuns(server)
  // ~90 % of the memory limit, touched page by page, then held until the timeout
  const hog = run(server, 'py', code(`
    import time
    block = bytearray(${Math.floor(LIMITS.memoryMb * 0.9)} * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print("holding", flush=True)
    time.sleep(60)
  `))
  const burner = run(server, 'py', 'while True:\n    pass\n')
  await sleep(700) // both neighbours are running: the hog has touched its memory
  const busy = await timeNormalRuns(server)
  const [held, burned] = await Promise.all([hog, burner])
  // the neighbours were really there until the end
  assert.match(held.body.stdout, /^holding$/m, describeRun(held.body))
  assertStoppedBy(held.body, 'timeout')
  assertStoppedBy(burned.body, 'timeout')
  const aloneAfter = await timeNormalRuns(server)

  const alone = median([...aloneBefore, ...aloneAfter])
  const during = median(busy)
  const bound = Math.max(2 * alone, alone + FLOOR_MS)
  const format = (values: number[]) => values.map((ms) => ms.toFixed(1)).join(', ')
  return {
    within: during <= bound,
    report: `alone median ${alone.toFixed(1)} ms (${format(aloneBefore)} | ${format(aloneAfter)}); with neighbours median ` +
      `${during.toFixed(1)} ms (${format(busy)}); bound ${bound.toFixed(1)} ms; load ${loadavg()[0]?.toFixed(2)}`,
  }
}

for (const driver of availableDrivers()) {
  describe(`noisy neighbours on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer

    before(async () => {
      server = await startAttackServer(suite, driver)
      await timeNormalRuns(server) // warm-up: first runs pay for page faults of the zygote's fork
    })

    test(`print(sum(range(10**6))) stays correct and within 2× its alone median (+${FLOOR_MS} ms floor) while one neighbour holds its memory limit and another burns CPU (best of ${ATTEMPTS} attempts)`, async (t) => {
      const results: string[] = []
      for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
        const outcome = await measureOnce(server)
        results.push(`attempt ${attempt}: ${outcome.report}`)
        t.diagnostic(results.at(-1) ?? '')
        if (outcome.within) break
        assert.ok(attempt < ATTEMPTS, `every attempt was slower than 2× (+${FLOOR_MS} ms):\n${results.join('\n')}`)
      }
      await assertStillServing(server)
    })
  })
}

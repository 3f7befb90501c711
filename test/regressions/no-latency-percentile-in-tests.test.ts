import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'

/**
 * Issue 9, finding 8. `test/e2e/overload.test.ts` asserted `/health` p99 < 50 ms; on a busy machine it
 * measured 80.9 ms and failed a newcomer's `npm test`. A latency percentile compared with a number is a
 * benchmark, not a test: it belongs in `npm run bench`, compared within one run. Tests keep the
 * behaviour (always answers, never 5xx) and may bound a request by its limit plus a grace, which is a
 * contract, not a speed.
 */

const TEST_DIR = path.resolve(import.meta.dirname, '..')
const LATENCY_STATISTIC = /\b(percentile\s*\(|p(50|90|95|99)\b|healthP\d+)/i

test('no test asserts a latency percentile against a threshold', () => {
  const offenders: string[] = []
  for (const name of readdirSync(TEST_DIR, { recursive: true }).map(String)) {
    if (!name.endsWith('.ts') || name.endsWith(path.basename(import.meta.filename))) continue
    const lines = readFileSync(path.join(TEST_DIR, name), 'utf8').split('\n')
    lines.forEach((line, index) => {
      if (/\bassert\b/.test(line) && LATENCY_STATISTIC.test(line) && /[<>]=?\s*[\d_]+/.test(line)) offenders.push(`test/${name}:${index + 1}: ${line.trim()}`)
    })
  }
  assert.deepEqual(offenders, [], `move these to npm run bench:\n${offenders.join('\n')}`)
})

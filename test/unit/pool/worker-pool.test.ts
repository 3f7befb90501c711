import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { test } from 'node:test'

interface Report { spawnCalls: number, spawnCallsBeforeFree: number, ticks: number, outcome: string }

// Each case runs in a child process: the bug these guard against (a failed spawn retried at once, by
// generic-pool, in microtasks) starves timers, which would hang this runner rather than fail a test.
function runPool (mode: 'no-free-slot' | 'failing'): Report {
  const fixture = path.join(import.meta.dirname, 'fixtures', 'pool-under-stress.ts')
  const child = spawnSync(process.execPath, ['--import', 'tsx', fixture, mode], { encoding: 'utf8', timeout: 15_000 })
  assert.equal(child.signal, null, `the pool finished on its own instead of spinning\n${child.stderr}`)
  return JSON.parse(child.stdout) as Report
}

test('a spawn that finds no free slot waits for one instead of failing, then succeeds', () => {
  const report = runPool('no-free-slot')
  assert.equal(report.spawnCallsBeforeFree, 0, 'no fork is attempted while every slot is busy')
  assert.equal(report.outcome, 'acquired')
  assert.equal(report.spawnCalls, 1)
})

test('failing spawns are retried with a pause, so the event loop keeps running', () => {
  const report = runPool('failing')
  assert.ok(report.ticks >= 50, `the event loop ran (${report.ticks} ticks of 10 ms in 1 s)`)
  assert.ok(report.spawnCalls <= 10, `spawns were retried ${report.spawnCalls} times in 1 s, not in a tight loop`)
  assert.match(report.outcome, /No worker became free within 1 s/)
})

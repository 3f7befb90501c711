import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import type { StorageLog } from '../../../src/storage/file-store.ts'
import { newId } from '../../../src/storage/ids.ts'
import { openLocalFileStore } from '../../../src/storage/local-file-store.ts'
import { startRetentionSweeper } from '../../../src/storage/retention.ts'

const DAY_MS = 24 * 3_600_000

function recordingLog () {
  const entries: Array<{ level: 'info' | 'warn', fields: Record<string, unknown>, message: string }> = []
  const log: StorageLog = {
    info: (fields, message) => { entries.push({ level: 'info', fields: { ...fields }, message }) },
    warn: (fields, message) => { entries.push({ level: 'warn', fields: { ...fields }, message }) },
  }
  return { log, entries }
}

function deferred<T> () {
  let resolve!: (value: T) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<T>((_resolve, _reject) => { resolve = _resolve; reject = _reject })
  return { promise, resolve, reject }
}

async function waitFor (isDone: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!isDone()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

test('the sweeper sweeps at once with the ttl, then again every interval', async (t) => {
  const calls: number[] = []
  const sweeper = startRetentionSweeper({ sweep: async (ttlMs) => { calls.push(ttlMs); return 0 } },
    { ttlMs: DAY_MS, intervalMs: 5 }, recordingLog().log)
  t.after(() => sweeper.stop())
  assert.equal(calls.length, 1) // the first sweep starts synchronously
  await waitFor(() => calls.length >= 3)
  assert.ok(calls.every((ttlMs) => ttlMs === DAY_MS))
})

test('the sweeper logs { removed } at info only when files were removed', async (t) => {
  const { log, entries } = recordingLog()
  const results = [0, 3, 0]
  let calls = 0
  const sweeper = startRetentionSweeper({ sweep: async () => results[calls++] ?? 0 }, { ttlMs: DAY_MS, intervalMs: 1 }, log)
  await waitFor(() => calls >= 4)
  await sweeper.stop()
  assert.deepEqual(entries.map(({ level, fields }) => ({ level, fields })), [{ level: 'info', fields: { removed: 3 } }])
})

test('a failing sweep is logged at warn and the next interval sweeps again', async (t) => {
  const { log, entries } = recordingLog()
  let calls = 0
  const failure = new Error('disk on fire')
  const sweeper = startRetentionSweeper({
    sweep: async () => {
      calls++
      if (calls === 1) throw failure
      return 1
    },
  }, { ttlMs: DAY_MS, intervalMs: 1 }, log)
  t.after(() => sweeper.stop())
  await waitFor(() => calls >= 2 && entries.some((entry) => entry.level === 'info'))
  assert.equal(entries[0]?.level, 'warn')
  assert.equal(entries[0]?.fields.err, failure)
})

test('a slow sweep is never overlapped by the next one', async (t) => {
  let running = 0
  let maxRunning = 0
  let calls = 0
  const gates = [deferred<number>(), deferred<number>()]
  const sweeper = startRetentionSweeper({
    sweep: async () => {
      const gate = gates[calls++]
      running++
      maxRunning = Math.max(maxRunning, running)
      try {
        return gate ? await gate.promise : 0
      } finally {
        running--
      }
    },
  }, { ttlMs: DAY_MS, intervalMs: 1 }, recordingLog().log)
  t.after(() => sweeper.stop())

  await sleep(50) // fifty intervals pass while the first sweep hangs
  assert.equal(calls, 1)
  gates[0]?.resolve(0)
  await waitFor(() => calls === 2)
  await sleep(20)
  assert.equal(calls, 2)
  gates[1]?.resolve(0)
  await waitFor(() => calls >= 3)
  assert.equal(maxRunning, 1)
})

test('stop waits for the running sweep and no sweep starts afterwards', async () => {
  const gate = deferred<number>()
  let calls = 0
  const sweeper = startRetentionSweeper({ sweep: async () => { calls++; return await gate.promise } },
    { ttlMs: DAY_MS, intervalMs: 1 }, recordingLog().log)

  let isStopped = false
  const stopping = sweeper.stop().then(() => { isStopped = true })
  await sleep(20)
  assert.equal(isStopped, false)
  gate.resolve(0)
  await stopping
  assert.equal(isStopped, true)
  await sleep(20)
  assert.equal(calls, 1)
})

test('the sweeper rejects a non-positive ttl or interval', () => {
  const store = { sweep: async () => 0 }
  const log = recordingLog().log
  assert.throws(() => startRetentionSweeper(store, { ttlMs: 0, intervalMs: 1000 }, log), RangeError)
  assert.throws(() => startRetentionSweeper(store, { ttlMs: DAY_MS, intervalMs: Number.NaN }, log), RangeError)
})

test('the sweeper removes an expired file from a local store and keeps a fresh one', async (t) => {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'warden-retention-'))
  t.after(() => fs.rm(dataDir, { recursive: true, force: true }))
  const store = await openLocalFileStore(dataDir)
  const sessionId = newId()
  const owner = { tenant: 't', user: 'u' }
  async function * contentsOf (text: string) { yield Buffer.from(text) }
  const put = (name: string) => store.put({ storageSessionId: sessionId, name, kind: 'output', owner }, contentsOf(name), 100)
  const expired = await put('expired.txt')
  const fresh = await put('fresh.txt')
  const then = new Date(Date.now() - 2 * DAY_MS)
  await fs.utimes(path.join(dataDir, 'files', sessionId, `${expired.id}.json`), then, then)
  const { log, entries } = recordingLog()

  const sweeper = startRetentionSweeper(store, { ttlMs: DAY_MS, intervalMs: 60_000 }, log)
  await sweeper.stop()

  assert.equal(await store.get(sessionId, expired.id), null)
  assert.ok(await store.get(sessionId, fresh.id))
  assert.deepEqual(entries.map((entry) => entry.fields), [{ removed: 1 }])
})

import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { instanceName, removeStaleInstances } from '../../../src/jail/cgroup.ts'

const DEAD_PID = 4_194_300 // above any pid_max default, so never alive

test('instance names carry the host name and the pid, as a cgroup directory name', () => {
  const name = instanceName(1234)
  assert.match(name, /^warden-[A-Za-z0-9][\w-]*-1234$/)
  assert.ok(name.includes(os.hostname().replace(/[^\w-]/g, '-').slice(0, 10)))
})

test('only this host\'s dead instances are swept: another container\'s may belong to a live server', async (t) => {
  const parent = await mkdtemp(path.join(os.tmpdir(), 'warden-instances-'))
  t.after(() => rm(parent, { recursive: true, force: true }))
  const own = instanceName(DEAD_PID)
  const legacy = `warden-${DEAD_PID}`
  const foreign = `warden-0123456789ab-${DEAD_PID}`
  const current = instanceName()
  for (const name of [own, legacy, foreign, current]) await mkdir(path.join(parent, name))
  const warnings = await removeStaleInstances([parent], current)
  assert.deepEqual(warnings, [])
  assert.equal(existsSync(path.join(parent, own)), false, 'this host\'s dead instance is swept')
  assert.equal(existsSync(path.join(parent, legacy)), false, 'an instance named by pid alone is swept')
  assert.equal(existsSync(path.join(parent, foreign)), true, 'another host\'s instance is left alone')
  assert.equal(existsSync(path.join(parent, current)), true, 'the current instance stays')
})

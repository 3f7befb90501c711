import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { JailDriver } from '../../../src/jail/jail-spec.ts'
import { NoJailDriverError, startWithFirstWorkingDriver } from '../../../src/jail/select-driver.ts'

const driver = (name: 'nsjail' | 'bwrap'): JailDriver => ({ name, version: 'test', launch: () => { throw new Error('not launched here') } })

test('the first driver whose jail starts is used, and each one tried before is named with its reason', async () => {
  const tried: string[] = []
  const result = await startWithFirstWorkingDriver([driver('nsjail'), driver('bwrap')], async (candidate) => {
    tried.push(candidate.name)
    if (candidate.name === 'nsjail') throw new Error('the zygote exited (code 1)')
    return 'pool'
  })
  assert.deepEqual(tried, ['nsjail', 'bwrap'])
  assert.equal(result.driver.name, 'bwrap')
  assert.equal(result.started, 'pool')
  assert.deepEqual(result.failures, ['nsjail could not start a jail: the zygote exited (code 1)'])
})

test('a driver that starts first is the only one tried', async () => {
  const tried: string[] = []
  const result = await startWithFirstWorkingDriver([driver('nsjail'), driver('bwrap')], async (candidate) => { tried.push(candidate.name); return 1 })
  assert.deepEqual(tried, ['nsjail'])
  assert.deepEqual(result.failures, [])
})

test('when no driver starts, the error names every reason', async () => {
  await assert.rejects(
    startWithFirstWorkingDriver([driver('nsjail'), driver('bwrap')], async (candidate) => { throw new Error(`${candidate.name} refused`) }),
    (error: Error) => error instanceof NoJailDriverError &&
      error.message === 'nsjail could not start a jail: nsjail refused; bwrap could not start a jail: bwrap refused'
  )
})

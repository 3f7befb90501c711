import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Slot, type SlotOwner } from '../../../src/pool/slot.ts'

const settle = () => new Promise((resolve) => setImmediate(resolve))

/** A slot with an owner that records what the slot asked of it. */
function slotWithOwner (options: { cleanFails?: boolean, processes?: number } = {}) {
  const calls = { kills: 0, interrupts: 0, cleans: 0, freed: 0 }
  const owner: SlotOwner = {
    killSlot: () => { calls.kills++ },
    interruptSlot: () => { calls.interrupts++ },
    readSlotCounters: async () => ({ oomKills: 0, memoryPeakBytes: null, cpuUsageUs: 7, pidsPeak: null }),
    countSlotProcesses: async () => options.processes ?? 0,
    cleanSlot: async () => {
      calls.cleans++
      if (options.cleanFails === true) throw new Error('still busy')
    },
    slotFreed: () => { calls.freed++ },
  }
  return { slot: new Slot(0, owner), calls }
}

test('a slot goes free -> spawning -> occupied -> cleaning -> free, and is freed only after its cgroup was cleaned', async () => {
  const { slot, calls } = slotWithOwner()
  assert.equal(slot.state, 'free')
  const link = slot.begin()
  assert.equal(slot.state, 'spawning')
  slot.occupied()
  assert.equal(slot.state, 'occupied')
  link.kill('done')
  assert.equal(calls.kills, 1)
  slot.onExited({ code: 0, signal: null })
  assert.equal(slot.state, 'cleaning')
  assert.deepEqual(await link.exited, { code: 0, signal: null })
  await settle()
  assert.equal(slot.state, 'free')
  assert.deepEqual(calls, { kills: 1, interrupts: 0, cleans: 1, freed: 1 })
})

test('a link of an earlier worker does nothing to the next worker of the same slot', async () => {
  const { slot, calls } = slotWithOwner()
  const old = slot.begin()
  slot.onExited({ code: 0, signal: null })
  await settle()
  slot.begin()
  old.kill('late timer')
  old.interrupt()
  assert.equal(await old.readCounters(), null)
  assert.deepEqual(calls, { kills: 0, interrupts: 0, cleans: 1, freed: 1 })
})

test('a link does nothing once its worker has exited, even before the slot is reused', async () => {
  const { slot, calls } = slotWithOwner()
  const link = slot.begin()
  slot.onExited({ code: null, signal: 9 })
  link.kill('after exit')
  assert.equal(calls.kills, 0)
})

test('survivors waits for the worker to exit, then counts the processes left in the slot', async () => {
  const { slot } = slotWithOwner({ processes: 2 })
  const link = slot.begin()
  let counted: number | null = null
  const survivors = link.survivors().then((value) => { counted = value })
  await settle()
  assert.equal(counted, null, 'not counted while the worker lives')
  slot.onExited({ code: 0, signal: null })
  await survivors
  assert.equal(counted, 2)
})

test('a slot whose cgroup cannot be cleaned is retired, not reused', async () => {
  const { slot, calls } = slotWithOwner({ cleanFails: true })
  slot.begin()
  slot.onExited({ code: 0, signal: null })
  await settle()
  assert.equal(slot.state, 'dead')
  assert.equal(calls.freed, 0)
})

test('when the zygote is lost the slot is dead and its worker\'s exit says the jail was lost', async () => {
  const { slot } = slotWithOwner()
  const link = slot.begin()
  slot.onLost()
  assert.equal(slot.state, 'dead')
  assert.deepEqual(await link.exited, { code: null, signal: 9, jailLost: true })
  slot.onExited({ code: 0, signal: null })
  assert.equal(slot.state, 'dead', 'a late exit report does not revive a dead slot')
})

test('an abandoned spawn (never forked) frees the slot after its cleanup', async () => {
  const { slot, calls } = slotWithOwner()
  const link = slot.begin()
  slot.abandon(Promise.resolve())
  await settle()
  assert.equal(slot.state, 'free')
  assert.equal(calls.freed, 1)
  link.kill('after abandon')
  assert.equal(calls.kills, 0)
})

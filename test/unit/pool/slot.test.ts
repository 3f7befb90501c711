import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { PassThrough } from 'node:stream'
import { test } from 'node:test'
import { encodeJsonFrame, FrameType } from '../../../src/pool/protocol.ts'
import { Slot, type SlotHandlers, type SlotOwner } from '../../../src/pool/slot.ts'

const settle = () => new Promise((resolve) => setImmediate(resolve))

function permutations<T> (items: T[]): T[][] {
  if (items.length <= 1) return [items]
  return items.flatMap((item, index) =>
    permutations([...items.slice(0, index), ...items.slice(index + 1)]).map((rest) => [item, ...rest]))
}

/** A slot on in-memory sockets, with an owner that records what the slot asked of it. */
function slotOnPipes () {
  const ctl = new PassThrough()
  const out = new PassThrough()
  const err = new PassThrough()
  const calls = { kills: 0, cleans: 0, freed: 0 }
  const owner: SlotOwner = {
    killSlot: () => { calls.kills++ },
    readSlotCounters: async () => null,
    countSlotProcesses: async () => null,
    cleanSlot: async () => { calls.cleans++ },
    slotFreed: () => { calls.freed++ },
  }
  return { slot: new Slot(0, ctl, out, err, owner), ctl, out, err, calls }
}

const quietHandlers: SlotHandlers = {
  frame: () => {}, stdout: () => {}, stderr: () => {}, exited: () => {}, controlDrained: () => {}, lost: () => {},
}

/** A slot whose worker reported ready and was handed to a job, as the pool does it. */
async function runningSlot () {
  const pipes = slotOnPipes()
  const ready = pipes.slot.begin()
  pipes.ctl.write(encodeJsonFrame(FrameType.ready, { setup_ms: 1 }))
  await ready
  const channel = pipes.slot.lease()
  channel.attach(quietHandlers)
  return { ...pipes, channel }
}

type Step = 'release' | 'exit report' | 'control fence' | 'stdout fence' | 'stderr fence'

// The zygote writes its fence on the worker's three sockets, then reports the exit on its own channel:
// under CPU contention Node may read these five things in any order, and the slot must come free in all.
test('a released slot comes free whatever order the exit report and the three fences arrive in', async () => {
  const steps: Step[] = ['release', 'exit report', 'control fence', 'stdout fence', 'stderr fence']
  const stuck: string[] = []
  for (const order of permutations(steps)) {
    const { slot, channel, ctl, out, err, calls } = await runningSlot()
    out.write('some output')
    await settle()
    const fence = randomBytes(16)
    for (const step of order) {
      if (step === 'release') channel.release()
      else if (step === 'exit report') slot.onExited({ code: 0, signal: null }, fence)
      else ({ 'control fence': ctl, 'stdout fence': out, 'stderr fence': err })[step].write(fence)
      await settle()
    }
    await settle()
    if (slot.state !== 'free' || calls.cleans !== 1 || calls.freed !== 1) stuck.push(`${order.join(' → ')}: ${slot.state}`)
  }
  assert.deepEqual(stuck, [])
})

test('a slot is not cleaned while its worker still holds the lease, even once everything has arrived', async () => {
  const { slot, channel, ctl, out, err, calls } = await runningSlot()
  const fence = randomBytes(16)
  slot.onExited({ code: 0, signal: null }, fence)
  for (const socket of [ctl, out, err]) socket.write(fence)
  await settle()
  assert.equal(slot.state, 'draining')
  assert.equal(calls.cleans, 0)
  channel.release()
  await settle()
  assert.equal(slot.state, 'free')
  assert.equal(calls.kills, 0, 'a worker already reaped is not killed again')
})

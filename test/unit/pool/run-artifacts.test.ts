import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { FrameType, MARKER_BYTES } from '../../../src/pool/protocol.ts'
import { Run, type Artifact, type ArtifactExchange, type RunLink, type RunResult } from '../../../src/pool/run.ts'

/**
 * The server's half of the compile cache's exchange (src/pool/run.ts): the build's artifacts are taken
 * only from the one A frame right after S, naming what the job asked for, within its size; anything else
 * is a protocol violation and nothing is kept.
 */

type Frame = [type: number, payload: string | object]

async function runWith (artifacts: ArtifactExchange | 'capture', frames: Frame[]): Promise<{ result: RunResult, kept: Artifact[][] }> {
  const kept: Artifact[][] = []
  const exchange = artifacts === 'capture' ? { capture: ['main'], maxBytes: 16, keep: (files: Artifact[]) => kept.push(files) } : artifacts
  let kill: () => void = () => {}
  const link: RunLink = { write: async () => {}, interrupt: () => {}, kill: () => kill(), readCounters: async () => null, pressure: () => {} }
  const run = new Run(link, {
    owner: 'test',
    program: { runner: 'steps', sourceFile: 'main.c', steps: [{ name: 'compile', argv: ['cc'] }, { name: 'run', argv: ['./main'] }], artifacts: ['main'] },
    code: '',
    args: [],
    inputs: [],
    cpuSeconds: 5,
    keep: false,
    outputs: { open: async () => null },
    artifacts: exchange,
  }, randomBytes(MARKER_BYTES), 1 << 20)
  // the worker's streams close once, and later than the kill that closes them (as a real worker's do)
  let ended = false
  const end = () => { if (ended) return; ended = true; run.onStdoutEnd(); run.onStderrEnd(); run.onControlEnd(); run.onExit(null, false) }
  kill = () => { setImmediate(end) }
  await new Promise((resolve) => setImmediate(resolve))
  for (const [type, payload] of frames) run.onFrame({ type, payload: Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)) })
  run.onFrame({ type: FrameType.done, payload: Buffer.from(JSON.stringify({ exit_code: 0, signal: null })) })
  await new Promise((resolve) => setImmediate(resolve))
  end()
  return { result: await run.done, kept }
}

const S: Frame = [FrameType.started, '']
const announce = (files: Array<{ name: string, size: number }>): Frame => [FrameType.artifact, { files }]

test('the artifact frame right after S, and its data, are kept as the build', async () => {
  const { result, kept } = await runWith('capture', [S, announce([{ name: 'main', size: 6 }]), [FrameType.data, 'ab'], [FrameType.data, 'cdef']])
  assert.equal(result.protocolViolation, null)
  assert.deepEqual(kept.map((files) => files.map((file) => [file.name, file.bytes.toString()])), [[['main', 'abcdef']]])
})

test('an empty list (the worker would not vouch for the build) keeps nothing and is no violation', async () => {
  const { result, kept } = await runWith('capture', [S, announce([])])
  assert.equal(result.protocolViolation, null)
  assert.deepEqual(kept, [])
})

const refused: Array<[string, ArtifactExchange | 'capture', Frame[]]> = [
  ['a job that asked for none', { provide: [] }, [S, announce([{ name: 'main', size: 1 }]), [FrameType.data, 'x']]],
  ['before S', 'capture', [announce([{ name: 'main', size: 1 }]), S]],
  ['after another frame', 'capture', [S, [FrameType.message, { type: 'x' }], announce([{ name: 'main', size: 1 }]), [FrameType.data, 'x']]],
  ['a second one', 'capture', [S, announce([]), announce([{ name: 'main', size: 1 }]), [FrameType.data, 'x']]],
  ['a name not asked for', 'capture', [S, announce([{ name: 'other', size: 1 }]), [FrameType.data, 'x']]],
  ['the same name twice', 'capture', [S, announce([{ name: 'main', size: 1 }, { name: 'main', size: 1 }]), [FrameType.data, 'xy']]],
  ['more bytes than the job allows', 'capture', [S, announce([{ name: 'main', size: 17 }])]],
  ['data beyond the announced size', 'capture', [S, announce([{ name: 'main', size: 1 }]), [FrameType.data, 'xy']]],
  ['another frame inside the artifact', 'capture', [S, announce([{ name: 'main', size: 2 }]), [FrameType.data, 'x'], [FrameType.output, { name: 'a' }]]],
]
for (const [what, exchange, frames] of refused) {
  test(`an artifact frame ${what} is a protocol violation and nothing is kept`, async () => {
    const { result, kept } = await runWith(exchange, frames)
    assert.match(result.protocolViolation ?? '', /artifact/)
    assert.deepEqual(kept, [])
  })
}

import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  encodeFrame,
  encodeJsonFrame,
  FENCE_BYTES,
  FencedCollector,
  type Frame,
  FrameDecoder,
  FrameType,
  type FrameTypeCode,
  HEADER_BYTES,
  MAX_FRAME_PAYLOAD,
} from '../../../src/pool/protocol.ts'

/** mulberry32: a small seeded generator, so every random chunking here is the same on every run. */
function seeded (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

function randomBytes (random: () => number, length: number): Buffer {
  const bytes = Buffer.alloc(length)
  for (let i = 0; i < length; i++) bytes[i] = Math.floor(random() * 256)
  return bytes
}

/** Cut `bytes` into pieces of 1..maxPiece bytes. */
function randomChunks (random: () => number, bytes: Buffer, maxPiece = 24): Buffer[] {
  const chunks: Buffer[] = []
  for (let offset = 0; offset < bytes.length;) {
    const size = 1 + Math.floor(random() * maxPiece)
    chunks.push(Buffer.from(bytes.subarray(offset, offset + size)))
    offset += size
  }
  return chunks
}

/** Frames as plain data (type letter + hex payload), so deepEqual failures read well. */
function show (frames: Frame[]): string[] {
  return frames.map((frame) => `${String.fromCharCode(frame.type)}:${frame.payload.toString('hex')}`)
}

function pushAll (decoder: FrameDecoder, chunks: Buffer[]): Frame[] {
  return chunks.flatMap((chunk) => decoder.push(chunk))
}

const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

/** A worker's frames up to (not including) its done frame; the payloads exercise every byte value. */
const workerFrames: Array<[FrameTypeCode, Buffer]> = [
  [FrameType.ready, Buffer.alloc(0)],
  [FrameType.started, Buffer.alloc(0)],
  [FrameType.output, Buffer.from(JSON.stringify({ name: 'plot.png' }))],
  [FrameType.data, Buffer.concat([allBytes, allBytes.reverse()])],
  [FrameType.data, Buffer.alloc(0)],
  [FrameType.outputEnd, Buffer.from(JSON.stringify({ size: 512 }))],
]
const doneFrame: [FrameTypeCode, Buffer] = [FrameType.done, Buffer.from(JSON.stringify({ exit_code: 0, signal: null, fence: 'ab'.repeat(16) }))]

function encodeAll (frames: Array<[FrameTypeCode, Buffer]>): Buffer {
  return Buffer.concat(frames.map(([type, payload]) => encodeFrame(type, payload)))
}

function expected (frames: Array<[FrameTypeCode, Buffer]>): string[] {
  return show(frames.map(([type, payload]) => ({ type, payload })))
}

const fence = randomBytes(seeded(1), FENCE_BYTES)
const workerFence = randomBytes(seeded(2), FENCE_BYTES)
const zygoteFence = randomBytes(seeded(3), FENCE_BYTES)

// ---------------------------------------------------------------------------------------------------
// encodeFrame

test('encodeFrame writes the type byte, a 4-byte big-endian length, then the payload', () => {
  const payload = Buffer.from([0, 1, 2, 0xff])
  assert.deepEqual(encodeFrame(FrameType.data, payload), Buffer.from([0x44, 0, 0, 0, 4, 0, 1, 2, 0xff]))
  assert.deepEqual(encodeFrame(FrameType.ready), Buffer.from([0x52, 0, 0, 0, 0]))
  assert.equal(HEADER_BYTES, 5)
  // big-endian: 0x020304 bytes are announced as 00 02 03 04
  assert.deepEqual(encodeFrame(FrameType.data, Buffer.alloc(0x020304)).subarray(0, HEADER_BYTES), Buffer.from([0x44, 0, 2, 3, 4]))
})

test('encodeJsonFrame carries the JSON text of its message as the payload', () => {
  const frame = encodeJsonFrame(FrameType.job, { lang: 'python', code: 'print("é")' })
  assert.equal(frame[0], 0x4a)
  assert.equal(frame.readUInt32BE(1), frame.length - HEADER_BYTES)
  assert.deepEqual(JSON.parse(frame.subarray(HEADER_BYTES).toString('utf8')), { lang: 'python', code: 'print("é")' })
})

// ---------------------------------------------------------------------------------------------------
// FrameDecoder: framing

test('FrameDecoder delivers several frames pushed in one chunk, in order', () => {
  const frames = [...workerFrames, doneFrame]
  const decoder = new FrameDecoder()
  assert.deepEqual(show(decoder.push(encodeAll(frames))), expected(frames))
  assert.equal(decoder.violation, null)
})

test('FrameDecoder delivers the same frames when the stream is split at every byte boundary', () => {
  const frames = [...workerFrames, doneFrame]
  const stream = encodeAll(frames)
  for (let cut = 0; cut <= stream.length; cut++) {
    const decoder = new FrameDecoder()
    const got = pushAll(decoder, [stream.subarray(0, cut), stream.subarray(cut)])
    assert.deepEqual(show(got), expected(frames), `split at byte ${cut}`)
  }
})

test('FrameDecoder delivers the same frames one byte at a time and in 500 random chunkings', () => {
  const frames = [...workerFrames, doneFrame]
  const stream = encodeAll(frames)
  const single = new FrameDecoder()
  const bytewise = pushAll(single, [...stream].map((byte) => Buffer.from([byte])))
  assert.deepEqual(show(bytewise), expected(frames))
  const random = seeded(42)
  for (let round = 0; round < 500; round++) {
    const decoder = new FrameDecoder()
    const got = pushAll(decoder, randomChunks(random, stream, 1 + round % 300))
    assert.deepEqual(show(got), expected(frames), `round ${round}`)
  }
})

test('FrameDecoder returns a frame only once all its payload bytes have arrived', () => {
  const decoder = new FrameDecoder()
  const frame = encodeFrame(FrameType.data, Buffer.from('abcdef'))
  assert.deepEqual(decoder.push(frame.subarray(0, 4)), [])
  assert.deepEqual(decoder.push(frame.subarray(4, 10)), [])
  assert.deepEqual(show(decoder.push(frame.subarray(10))), [`D:${Buffer.from('abcdef').toString('hex')}`])
})

test('FrameDecoder accepts a payload of exactly MAX_FRAME_PAYLOAD bytes', () => {
  const decoder = new FrameDecoder()
  const frames = decoder.push(encodeFrame(FrameType.data, Buffer.alloc(MAX_FRAME_PAYLOAD, 7)))
  assert.equal(frames.length, 1)
  assert.equal(frames[0]?.payload.length, MAX_FRAME_PAYLOAD)
  assert.equal(decoder.violation, null)
})

test('FrameDecoder sets violation on a length over MAX_FRAME_PAYLOAD and parses nothing after it', () => {
  const decoder = new FrameDecoder()
  const oversize = Buffer.from([FrameType.data, 0, 0, 0, 0])
  oversize.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 1)
  const ready = encodeFrame(FrameType.ready)
  const got = decoder.push(Buffer.concat([ready, oversize, encodeFrame(FrameType.started)]))
  assert.deepEqual(show(got), ['R:'])
  assert.match(decoder.violation ?? '', new RegExp(`${MAX_FRAME_PAYLOAD + 1}`))
  assert.deepEqual(decoder.push(encodeAll([...workerFrames, doneFrame])), [])
  assert.equal(decoder.isFenced, false)
})

test('FrameDecoder flags an oversize length as soon as the 5 header bytes are in, without waiting for the payload', () => {
  const decoder = new FrameDecoder()
  const header = Buffer.from([FrameType.data, 0xff, 0xff, 0xff, 0xff])
  assert.deepEqual(decoder.push(header.subarray(0, 4)), [])
  assert.equal(decoder.violation, null)
  assert.deepEqual(decoder.push(header.subarray(4)), [])
  assert.match(decoder.violation ?? '', /4294967295/)
})

test('FrameDecoder parses nothing after a done (X) frame, in the same chunk or later ones', () => {
  const decoder = new FrameDecoder()
  const stream = Buffer.concat([encodeAll([[FrameType.started, Buffer.alloc(0)], doneFrame]), encodeFrame(FrameType.ready)])
  assert.deepEqual(show(decoder.push(stream)), expected([[FrameType.started, Buffer.alloc(0)], doneFrame]))
  assert.deepEqual(decoder.push(encodeAll(workerFrames)), [])
  assert.equal(decoder.violation, null)
})

test('FrameDecoder parses nothing after a failed (F) frame', () => {
  const decoder = new FrameDecoder()
  const failed: [FrameTypeCode, Buffer] = [FrameType.failed, Buffer.from('{"message":"no cgroup"}')]
  const got = pushAll(decoder, randomChunks(seeded(5), encodeAll([failed, ...workerFrames])))
  assert.deepEqual(show(got), expected([failed]))
  assert.equal(decoder.violation, null)
})

// ---------------------------------------------------------------------------------------------------
// FrameDecoder: fences

test('FrameDecoder is fenced when the fence is announced before its bytes arrive, split at every boundary', () => {
  const tail = Buffer.concat([encodeAll([doneFrame]), fence])
  for (let cut = 0; cut <= tail.length; cut++) {
    const decoder = new FrameDecoder()
    assert.deepEqual(decoder.setFence(fence), [])
    const got = pushAll(decoder, [tail.subarray(0, cut), tail.subarray(cut)])
    assert.deepEqual(show(got), expected([doneFrame]), `split at ${cut}`)
    assert.equal(decoder.isFenced, true, `split at ${cut}`)
  }
})

test('FrameDecoder is fenced when the fence bytes arrive before the announcement, split at every boundary', () => {
  const tail = Buffer.concat([encodeAll([doneFrame]), fence])
  for (let cut = 0; cut <= tail.length; cut++) {
    const decoder = new FrameDecoder()
    const got = pushAll(decoder, [tail.subarray(0, cut), tail.subarray(cut)])
    assert.equal(decoder.isFenced, false)
    assert.deepEqual(decoder.setFence(fence), [])
    assert.deepEqual(show(got), expected([doneFrame]), `split at ${cut}`)
    assert.equal(decoder.isFenced, true, `split at ${cut}`)
  }
})

test('FrameDecoder finds a fence that follows unparsed bytes after the done frame', () => {
  const junk = randomBytes(seeded(6), 100)
  for (const announceFirst of [true, false]) {
    const decoder = new FrameDecoder()
    if (announceFirst) decoder.setFence(fence)
    const got = pushAll(decoder, randomChunks(seeded(7), Buffer.concat([encodeAll([doneFrame]), junk, fence]), 40))
    if (!announceFirst) decoder.setFence(fence)
    assert.deepEqual(show(got), expected([doneFrame]))
    assert.equal(decoder.isFenced, true, `announced ${announceFirst ? 'before' : 'after'} the bytes`)
  }
})

test('FrameDecoder ignores bytes after the fence until reset(), then parses the next worker afresh', () => {
  const decoder = new FrameDecoder()
  decoder.setFence(fence)
  const next = encodeFrame(FrameType.ready)
  assert.deepEqual(show(decoder.push(Buffer.concat([encodeFrame(FrameType.started), fence, next]))), ['S:'])
  assert.equal(decoder.isFenced, true)
  assert.deepEqual(decoder.push(next), [])
  assert.deepEqual(decoder.setFence(randomBytes(seeded(8), FENCE_BYTES)), [])

  decoder.reset()
  assert.equal(decoder.isFenced, false)
  assert.equal(decoder.violation, null)
  // the old fence is forgotten: inside a payload it is just data
  assert.deepEqual(show(decoder.push(Buffer.concat([next, encodeFrame(FrameType.data, fence)]))), ['R:', `D:${fence.toString('hex')}`])
  assert.equal(decoder.isFenced, false)
})

test('FrameDecoder reset() clears a violation', () => {
  const decoder = new FrameDecoder()
  decoder.push(Buffer.from([FrameType.data, 0xff, 0xff, 0xff, 0xff]))
  assert.notEqual(decoder.violation, null)
  decoder.reset()
  assert.equal(decoder.violation, null)
  assert.deepEqual(show(decoder.push(encodeFrame(FrameType.ready))), ['R:'])
})

/**
 * A worker killed after `cut` bytes of its stream, then the zygote's fence: the decoder must deliver
 * exactly the frames complete before the cut and end fenced. Tries every cut; returns the failures.
 */
function killedMidStream (options: { announceFirst: boolean, fenceInOneRead: boolean }): string[] {
  const stream = encodeAll(workerFrames)
  const ends: number[] = []
  let offset = 0
  for (const [, payload] of workerFrames) ends.push(offset += HEADER_BYTES + payload.length)
  const random = seeded(9)
  const failures: string[] = []
  for (let cut = 0; cut <= stream.length; cut++) {
    const complete = workerFrames.filter((_, i) => (ends[i] ?? Infinity) <= cut)
    const chunks = options.fenceInOneRead
      ? [...randomChunks(random, stream.subarray(0, cut), 64), fence]
      : randomChunks(random, Buffer.concat([stream.subarray(0, cut), fence]), 64)
    const decoder = new FrameDecoder()
    decoder.holdBack = true // as the slot sets it while a job runs: the only time a worker can die mid-frame
    const got: Frame[] = []
    if (options.announceFirst) got.push(...decoder.setFence(fence))
    got.push(...pushAll(decoder, chunks))
    if (!options.announceFirst) got.push(...decoder.setFence(fence))
    const delivered = show(got)
    if (JSON.stringify(delivered) !== JSON.stringify(expected(complete)) || !decoder.isFenced) {
      failures.push(`cut at byte ${cut}: ${delivered.length} frames delivered (expected ${complete.length}), isFenced=${decoder.isFenced}`)
    }
  }
  return failures
}

function assertNoFailures (failures: string[]): void {
  assert.equal(failures.length, 0, `${failures.length} cuts failed, e.g.\n${failures.slice(0, 6).join('\n')}`)
}

test('a worker killed mid-frame, fence announced and then read whole: only complete frames, then fenced', () => {
  assertNoFailures(killedMidStream({ announceFirst: true, fenceInOneRead: true }))
})

test('a worker killed mid-frame, fence announced and then read in pieces: only complete frames, then fenced', () => {
  assertNoFailures(killedMidStream({ announceFirst: true, fenceInOneRead: false }))
})

// The zygote writes the fence on the sockets before it reports it, so this order is the usual one.
test('a worker killed mid-frame, fence bytes read before the announcement: only complete frames, then fenced', () => {
  assertNoFailures(killedMidStream({ announceFirst: false, fenceInOneRead: true }))
})

// ---------------------------------------------------------------------------------------------------
// FencedCollector

function collector (maxBytes: number) {
  let overflows = 0
  const c = new FencedCollector(maxBytes, () => { overflows++ })
  return { c, overflows: () => overflows }
}

test('FencedCollector keeps the bytes before the worker\'s fence and nothing after it', () => {
  const { c, overflows } = collector(1000)
  c.expectFence(workerFence, false)
  c.push(Buffer.from('hello '))
  assert.equal(c.output, null)
  c.push(Buffer.concat([Buffer.from('world'), workerFence, Buffer.from('late bytes')]))
  assert.deepEqual(c.output, Buffer.from('hello world'))
  assert.equal(c.isFenced, false)
  assert.equal(c.truncated, false)
  c.push(zygoteFence)
  c.expectFence(zygoteFence, true)
  assert.equal(c.isFenced, true)
  assert.deepEqual(c.output, Buffer.from('hello world'))
  assert.equal(overflows(), 0)
})

test('FencedCollector closes the output at the worker\'s fence split at every byte boundary, announced before, between or after', () => {
  const content = Buffer.from('x'.repeat(40) + 'y'.repeat(9))
  const stream = Buffer.concat([content, workerFence])
  for (let cut = 0; cut <= stream.length; cut++) {
    for (const when of ['before', 'between', 'after'] as const) {
      const { c } = collector(1000)
      if (when === 'before') c.expectFence(workerFence, false)
      c.push(stream.subarray(0, cut))
      if (when === 'between') c.expectFence(workerFence, false)
      c.push(stream.subarray(cut))
      if (when === 'after') c.expectFence(workerFence, false)
      assert.deepEqual(c.output, content, `split at ${cut}, announced ${when}`)
      assert.equal(c.truncated, false)
    }
  }
})

test('FencedCollector output is exact over 1000 random outputs, chunkings and announcement points', () => {
  const random = seeded(10)
  for (let round = 0; round < 1000; round++) {
    const content = randomBytes(random, Math.floor(random() * 200))
    const chunks = randomChunks(random, Buffer.concat([content, workerFence, zygoteFence]), 1 + Math.floor(random() * 48))
    const workerAt = Math.floor(random() * (chunks.length + 1))
    const zygoteAt = workerAt + Math.floor(random() * (chunks.length + 1 - workerAt))
    const { c, overflows } = collector(1000)
    for (let i = 0; i <= chunks.length; i++) {
      if (i === workerAt) c.expectFence(workerFence, false)
      if (i === zygoteAt) c.expectFence(zygoteFence, true)
      const chunk = chunks[i]
      if (chunk !== undefined) c.push(chunk)
    }
    assert.deepEqual(c.output, content, `round ${round}`)
    assert.equal(c.isFenced, true, `round ${round}`)
    assert.equal(c.truncated, false)
    assert.equal(overflows(), 0)
  }
})

test('the zygote\'s fence alone closes the output and marks isFenced, announced before or after', () => {
  const content = Buffer.from('partial output of a killed worker')
  for (const announceFirst of [true, false]) {
    const { c } = collector(1000)
    if (announceFirst) c.expectFence(zygoteFence, true)
    for (const chunk of randomChunks(seeded(11), Buffer.concat([content, zygoteFence]), 5)) c.push(chunk)
    if (!announceFirst) c.expectFence(zygoteFence, true)
    assert.deepEqual(c.output, content)
    assert.equal(c.isFenced, true)
  }
})

test('FencedCollector ignores pushes once fenced', () => {
  const { c, overflows } = collector(10)
  c.expectFence(zygoteFence, true)
  c.push(Buffer.concat([Buffer.from('ok'), zygoteFence]))
  c.push(Buffer.alloc(1000, 1))
  assert.deepEqual(c.output, Buffer.from('ok'))
  assert.equal(c.truncated, false)
  assert.equal(overflows(), 0)
})

test('output over maxBytes is cut at maxBytes, marked truncated, and reported by exactly one onOverflow call', () => {
  const random = seeded(12)
  for (let round = 0; round < 200; round++) {
    const content = randomBytes(random, 101 + Math.floor(random() * 2000))
    const announceFirst = round % 2 === 0
    const { c, overflows } = collector(100)
    if (announceFirst) c.expectFence(workerFence, false)
    for (const chunk of randomChunks(random, Buffer.concat([content, workerFence]), 1 + Math.floor(random() * 300))) c.push(chunk)
    if (!announceFirst) c.expectFence(workerFence, false)
    c.push(zygoteFence)
    c.expectFence(zygoteFence, true)
    assert.deepEqual(c.output, content.subarray(0, 100), `round ${round}`)
    assert.equal(c.truncated, true)
    assert.equal(overflows(), 1, `round ${round}: ${content.length} bytes`)
  }
})

test('onOverflow is not called for a stream of exactly maxBytes followed by its fence', () => {
  for (const announceFirst of [true, false]) {
    const { c, overflows } = collector(100)
    if (announceFirst) c.expectFence(workerFence, false)
    c.push(Buffer.alloc(100, 0x61))
    c.push(workerFence)
    if (!announceFirst) c.expectFence(workerFence, false)
    assert.equal(c.output?.length, 100)
    assert.equal(c.truncated, false)
    assert.equal(overflows(), 0)
  }
})

test('onOverflow allows FENCE_BYTES of slack for an unannounced fence, then fires once', () => {
  const { c, overflows } = collector(100)
  c.push(Buffer.alloc(100 + FENCE_BYTES, 0x61))
  assert.equal(overflows(), 0)
  c.push(Buffer.from('b'))
  assert.equal(overflows(), 1)
  for (let i = 0; i < 50; i++) c.push(Buffer.alloc(100, 0x63))
  assert.equal(overflows(), 1)
  c.expectFence(zygoteFence, true)
  c.push(zygoteFence)
  assert.equal(c.isFenced, true)
  assert.equal(c.truncated, true)
  assert.deepEqual(c.output, Buffer.alloc(100, 0x61))
})

test('maxBytes + 1 bytes before the worker\'s fence are truncated and reported once', () => {
  const { c, overflows } = collector(100)
  c.push(Buffer.alloc(101, 0x61))
  c.push(workerFence)
  c.expectFence(workerFence, false)
  assert.equal(c.truncated, true)
  assert.equal(overflows(), 1)
  assert.equal(c.output?.length, 100)
})

test('output containing fence prefixes and near-fences is kept intact', () => {
  const nearMiss = Buffer.from(workerFence)
  nearMiss[FENCE_BYTES - 1] = (nearMiss[FENCE_BYTES - 1] ?? 0) ^ 1
  const content = Buffer.concat([
    workerFence.subarray(0, FENCE_BYTES - 1),
    Buffer.from('a'),
    workerFence.subarray(0, 8),
    workerFence.subarray(0, 8),
    nearMiss,
    zygoteFence.subarray(0, FENCE_BYTES - 1),
    workerFence.subarray(1),
    Buffer.alloc(20, workerFence[0]),
    workerFence.subarray(0, FENCE_BYTES - 1),
  ])
  const random = seeded(13)
  for (let round = 0; round < 300; round++) {
    const announceFirst = round % 2 === 0
    const { c } = collector(1000)
    if (announceFirst) c.expectFence(workerFence, false)
    for (const chunk of randomChunks(random, Buffer.concat([content, workerFence, zygoteFence]), 1 + round % 40)) c.push(chunk)
    if (!announceFirst) c.expectFence(workerFence, false)
    c.expectFence(zygoteFence, true)
    assert.deepEqual(c.output, content, `round ${round}`)
    assert.equal(c.isFenced, true)
  }
})

test('bytes arriving after the worker\'s fence, in later chunks, are dropped and never trigger onOverflow', () => {
  const { c, overflows } = collector(100)
  c.expectFence(workerFence, false)
  c.push(Buffer.concat([Buffer.from('done'), workerFence]))
  for (let i = 0; i < 20; i++) c.push(Buffer.alloc(500, 0x7a))
  c.push(zygoteFence)
  c.expectFence(zygoteFence, true)
  assert.deepEqual(c.output, Buffer.from('done'))
  assert.equal(c.truncated, false)
  assert.equal(overflows(), 0)
})

// onOverflow kills the worker (pool/worker.ts), so a spurious call kills a run that stayed within its limit.
test('bytes after an announced worker fence in the fence\'s own chunk never trigger onOverflow', () => {
  const { c, overflows } = collector(100)
  c.expectFence(workerFence, false)
  c.expectFence(zygoteFence, true)
  c.push(Buffer.concat([Buffer.alloc(100, 0x61), workerFence, zygoteFence]))
  assert.deepEqual(c.output, Buffer.alloc(100, 0x61))
  assert.equal(c.truncated, false)
  assert.equal(overflows(), 0)
})

// worker.ts queues frame handling, so the zygote's `exited` can be handled before the worker's done frame.
test('the worker\'s fence announced after the zygote\'s still closes the output before the worker\'s fence', () => {
  const content = Buffer.from('result: 42\n')
  const { c } = collector(1000)
  c.push(Buffer.concat([content, workerFence, zygoteFence]))
  c.expectFence(zygoteFence, true)
  c.expectFence(workerFence, false)
  assert.equal(c.isFenced, true)
  assert.deepEqual(c.output, content)
})

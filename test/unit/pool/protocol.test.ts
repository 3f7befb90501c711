import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import {
  encodeFrame, encodeJsonMessage, encodeMessage, FrameDecoder, FrameType, HEADER_BYTES, MARKER_BYTES, MAX_FRAME_PAYLOAD, RunStream, syncMarker,
  type Frame,
} from '../../../src/pool/protocol.ts'

const BUDGET = 8 * MAX_FRAME_PAYLOAD

test('encodeFrame writes the type byte, a 4-byte big-endian length, then the payload', () => {
  const frame = encodeFrame(FrameType.data, Buffer.from('abc'))
  assert.deepEqual([...frame], [0x44, 0, 0, 0, 3, 0x61, 0x62, 0x63])
  assert.throws(() => encodeFrame(FrameType.data, Buffer.alloc(MAX_FRAME_PAYLOAD + 1)), RangeError)
})

test('encodeMessage splits a message over MAX_FRAME_PAYLOAD into continued frames ending in its own type', () => {
  const payload = randomBytes(2 * MAX_FRAME_PAYLOAD + 10)
  const bytes = encodeMessage(FrameType.message, payload)
  assert.equal(bytes.length, payload.length + 3 * HEADER_BYTES)
  assert.equal(bytes[0], FrameType.continued)
  assert.equal(bytes[HEADER_BYTES + MAX_FRAME_PAYLOAD], FrameType.continued)
  assert.equal(bytes[2 * (HEADER_BYTES + MAX_FRAME_PAYLOAD)], FrameType.message)
  const frames = new FrameDecoder(BUDGET).push(bytes)
  assert.equal(frames.length, 1)
  assert.equal(frames[0]?.type, FrameType.message)
  assert.ok(frames[0]?.payload.equals(payload))
})

test('encodeJsonMessage carries the JSON text of its message as the payload', () => {
  const frames = new FrameDecoder(BUDGET).push(encodeJsonMessage(FrameType.job, { code: 'print("é")', args: [] }))
  assert.deepEqual(JSON.parse(frames[0]?.payload.toString('utf8') ?? ''), { code: 'print("é")', args: [] })
})

function sampleStream (): { bytes: Buffer, expected: Array<[number, string]> } {
  const parts: Array<[typeof FrameType[keyof typeof FrameType], Buffer]> = [
    [FrameType.ready, Buffer.alloc(0)],
    [FrameType.started, Buffer.alloc(0)],
    [FrameType.output, Buffer.from('{"name":"a.txt"}')],
    [FrameType.data, randomBytes(3000)],
    [FrameType.message, randomBytes(MAX_FRAME_PAYLOAD + 77)],
    [FrameType.outputEnd, Buffer.from('{"size":3000}')],
    [FrameType.done, Buffer.from('{"exit_code":0}')],
  ]
  return {
    bytes: Buffer.concat(parts.map(([type, payload]) => encodeMessage(type, payload))),
    expected: parts.map(([type, payload]) => [type, payload.toString('hex')]),
  }
}

const describeFrames = (frames: Frame[]) => frames.map((frame): [number, string] => [frame.type, frame.payload.toString('hex')])

test('FrameDecoder delivers the same messages whatever the chunking: whole, 1 byte, and 300 random splits', () => {
  const { bytes, expected } = sampleStream()
  assert.deepEqual(describeFrames(new FrameDecoder(BUDGET).push(bytes)), expected)
  let seed = 11
  for (let round = 0; round < 300; round++) {
    const decoder = new FrameDecoder(BUDGET)
    const got: Frame[] = []
    for (let offset = 0; offset < bytes.length;) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      const size = round === 0 ? 1 : 1 + (seed % 200_000)
      got.push(...decoder.push(bytes.subarray(offset, offset + size)))
      offset += size
      if (round === 0 && offset > 5000) { got.push(...decoder.push(bytes.subarray(offset))); break }
    }
    assert.deepEqual(describeFrames(got), expected, `round ${round}`)
  }
})

test('FrameDecoder returns a message only once all its bytes have arrived, and counts what is pending', () => {
  const bytes = encodeFrame(FrameType.done, Buffer.from('{"exit_code":0}'))
  const decoder = new FrameDecoder(BUDGET)
  assert.deepEqual(decoder.push(bytes.subarray(0, bytes.length - 1)), [])
  assert.equal(decoder.pendingBytes, bytes.length - 1)
  assert.equal(decoder.push(bytes.subarray(bytes.length - 1)).length, 1)
  assert.equal(decoder.pendingBytes, 0)
})

test('FrameDecoder flags a frame length over MAX_FRAME_PAYLOAD as soon as its header is in, and parses nothing after', () => {
  const decoder = new FrameDecoder(BUDGET)
  const header = Buffer.from([FrameType.data, 0xff, 0xff, 0xff, 0xff])
  assert.deepEqual(decoder.push(Buffer.concat([encodeFrame(FrameType.started), header])).map((frame) => frame.type), [FrameType.started])
  assert.match(decoder.violation ?? '', /exceeds/)
  assert.deepEqual(decoder.push(encodeFrame(FrameType.done, Buffer.from('{}'))), [])
})

test('FrameDecoder flags continued frames that add up to more than its budget', () => {
  const decoder = new FrameDecoder(2 * MAX_FRAME_PAYLOAD)
  const frame = encodeFrame(FrameType.continued, Buffer.alloc(MAX_FRAME_PAYLOAD))
  assert.deepEqual(decoder.push(Buffer.concat([frame, frame, frame])), [])
  assert.match(decoder.violation ?? '', /more than 2097152 bytes/)
})

// --- RunStream: one run's part of stdout or stderr, ended by the run's marker ---

function collect (marker: Buffer) {
  const delivered: Buffer[] = []
  const stream = new RunStream(marker, (chunk) => delivered.push(Buffer.from(chunk)))
  return { stream, output: () => Buffer.concat(delivered) }
}

test('RunStream delivers the bytes before the marker and returns those after it, split at every boundary', () => {
  const marker = randomBytes(MARKER_BYTES)
  const body = Buffer.from('hello, world\n'.repeat(3))
  const after = Buffer.from('from a background process')
  const whole = Buffer.concat([body, marker, after])
  for (let split = 0; split <= whole.length; split++) {
    const { stream, output } = collect(marker)
    const restFirst = stream.push(whole.subarray(0, split))
    const rest = restFirst ?? stream.push(whole.subarray(split))
    assert.ok(stream.isEnded, `split ${split}`)
    assert.ok(output().equals(body), `split ${split}: ${output().toString()}`)
    const trailing = restFirst === null ? rest : Buffer.concat([restFirst, whole.subarray(split)])
    assert.ok(trailing?.equals(after), `split ${split}: rest ${trailing?.toString()}`)
  }
})

test('RunStream delivers output at once and holds back only a tail that could begin its marker; end() delivers that', () => {
  const marker = randomBytes(MARKER_BYTES)
  const { stream, output } = collect(marker)
  // a short progress line is the notebook's as soon as it is written, not when the cell prints more
  stream.push(Buffer.from('epoch 1\n'))
  assert.equal(output().toString(), 'epoch 1\n')
  stream.push(Buffer.concat([Buffer.from('a'), marker.subarray(0, 7)]))
  assert.equal(output().toString(), 'epoch 1\na')
  stream.end()
  assert.ok(output().equals(Buffer.concat([Buffer.from('epoch 1\na'), marker.subarray(0, 7)])))
  assert.ok(stream.isEnded)
})

test('RunStream with sync markers delivers output at once, holds back a tail that could begin the next sync marker, and takes the markers out', () => {
  const marker = randomBytes(MARKER_BYTES)
  const seed = randomBytes(16)
  const delivered: Buffer[] = []
  const stream = new RunStream(marker, (chunk) => delivered.push(Buffer.from(chunk)), seed)
  const output = () => Buffer.concat(delivered).toString()
  stream.push(Buffer.from('before\n'))
  assert.equal(output(), 'before\n')
  const sync = syncMarker(seed, 0)
  stream.push(Buffer.concat([Buffer.from('x'), sync.subarray(0, 9)]))
  assert.equal(output(), 'before\nx')
  let passed = false
  stream.untilSync(0).then(() => { passed = true }, () => {})
  stream.push(Buffer.concat([sync.subarray(9), Buffer.from('after\n')]))
  assert.equal(output(), 'before\nxafter\n')
  return Promise.resolve().then(() => assert.ok(passed))
})

test('output made of marker prefixes and near-markers is kept intact', () => {
  const marker = randomBytes(MARKER_BYTES)
  const near = Buffer.concat([marker.subarray(0, MARKER_BYTES - 1), Buffer.from([marker[MARKER_BYTES - 1]! ^ 1])])
  const body = Buffer.concat([marker.subarray(0, 5), near, marker.subarray(0, 15), Buffer.from('x'), near])
  for (let split = 0; split <= body.length; split++) {
    const { stream, output } = collect(marker)
    stream.push(body.subarray(0, split))
    stream.push(Buffer.concat([body.subarray(split), marker]))
    assert.ok(output().equals(body), `split ${split}`)
  }
})

test('RunStream output is exact over 500 random outputs and chunkings', () => {
  let seed = 3
  const next = (max: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % max }
  for (let round = 0; round < 500; round++) {
    const marker = randomBytes(MARKER_BYTES)
    const body = randomBytes(next(3000))
    const whole = Buffer.concat([body, marker, randomBytes(next(40))])
    const { stream, output } = collect(marker)
    for (let offset = 0; offset < whole.length && !stream.isEnded;) {
      const size = 1 + next(400)
      stream.push(whole.subarray(offset, offset + size))
      offset += size
    }
    assert.ok(stream.isEnded && output().equals(body), `round ${round}`)
  }
})

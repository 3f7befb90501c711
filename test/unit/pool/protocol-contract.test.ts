import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'
import {
  CHANNEL_BYTES,
  DATA_CHUNK_BYTES,
  encodeChannelBytes,
  encodeFrame,
  encodeJsonMessage,
  encodeMessage,
  type Frame,
  FrameDecoder,
  FrameType,
  HEADER_BYTES,
  MAX_FRAME_PAYLOAD,
} from '../../../src/pool/protocol.ts'

// The two halves of the worker protocol, driven against each other: sandbox/frames.py (in the jail)
// and src/pool/protocol.ts (in the server). sandbox/README.md is the reference for both.

const sandboxDir = path.resolve(import.meta.dirname, '..', '..', '..', 'sandbox')
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
const BUDGET = 16 * MAX_FRAME_PAYLOAD

/** Run `script` with sandbox/ on sys.path, `input` on stdin; returns stdout, fails the test on a non-zero exit. */
function runPython (script: string, input: Buffer = Buffer.alloc(0)): Buffer {
  const prelude = `import sys\nsys.path.insert(0, ${JSON.stringify(sandboxDir)})\nimport frames\n`
  const result = spawnSync(python, ['-c', prelude + script], { input, maxBuffer: 256 * 1024 * 1024 })
  if (result.error) throw result.error
  assert.equal(result.status, 0, `python exited ${result.status}: ${result.stderr.toString()}`)
  return result.stdout
}

const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

test('Python and TypeScript agree on the frame type codes, header size and size limits', () => {
  const constants = JSON.parse(runPython(`
import json
print(json.dumps({
  "continued": frames.CONTINUED, "data": frames.DATA, "message": frames.MESSAGE, "job": frames.JOB,
  "ready": frames.READY, "started": frames.STARTED, "output": frames.OUTPUT, "outputEnd": frames.OUTPUT_END,
  "done": frames.DONE, "failed": frames.FAILED, "prepared": frames.PREPARED, "artifact": frames.ARTIFACT, "terminal": frames.TERMINAL,
  "channel": frames.CHANNEL.size, "header": frames.HEADER.size, "maxPayload": frames.MAX_PAYLOAD, "chunk": frames.CHUNK,
}))`).toString('utf8'))
  assert.deepEqual(constants, {
    ...FrameType,
    channel: CHANNEL_BYTES,
    header: HEADER_BYTES,
    maxPayload: MAX_FRAME_PAYLOAD,
    chunk: DATA_CHUNK_BYTES,
  })
})

test('terminal channel bytes: Python send_channel and encodeChannelBytes make the same frames, split at one frame\'s payload', () => {
  const stdout = runPython(`
fd = sys.stdout.fileno()
frames.send_channel(fd, 7, bytes(range(256)) * 5000)
frames.send_channel(fd, 4294967295, b"")
`)
  const bytes = Buffer.concat(Array.from({ length: 5000 }, () => allBytes))
  assert.ok(stdout.equals(Buffer.concat([encodeChannelBytes(7, bytes), encodeChannelBytes(4294967295, Buffer.alloc(0))])))
  const frames = new FrameDecoder(BUDGET).push(stdout)
  assert.deepEqual(frames.map((frame) => frame.type), [FrameType.terminal, FrameType.terminal, FrameType.terminal])
  assert.equal(frames[0]?.payload.readUInt32BE(0), 7)
  assert.equal(frames[0]?.payload.length, MAX_FRAME_PAYLOAD)
  assert.equal(frames[2]?.payload.readUInt32BE(0), 4294967295)
})

test('messages written by Python send/send_json decode identically with FrameDecoder, in any chunking', () => {
  const message = { name: 'résumé 📈.csv', size: 3, nested: { list: [1, null, true], quote: '"\\' } }
  const stdout = runPython(`
import json
fd = sys.stdout.fileno()
frames.send(fd, frames.READY)
frames.send_json(fd, frames.OUTPUT, json.loads(${JSON.stringify(JSON.stringify(message))}))
frames.send(fd, frames.DATA, bytes(range(256)))
frames.send(fd, frames.DATA, b"")
frames.send(fd, frames.DATA, bytes(range(256)) * 1024)
frames.send(fd, frames.MESSAGE, bytes(range(256)) * 9000)
frames.send_json(fd, frames.DONE, {"exit_code": 0, "signal": None})
`)
  const big = Buffer.concat(Array.from({ length: 9000 }, () => allBytes))
  const check = (got: Frame[]) => {
    assert.deepEqual(got.map((frame) => frame.type), [FrameType.ready, FrameType.output, FrameType.data, FrameType.data, FrameType.data, FrameType.message, FrameType.done])
    const [ready, output, data, empty, large, joined, done] = got
    assert.equal(ready?.payload.length, 0)
    assert.deepEqual(JSON.parse(output?.payload.toString('utf8') ?? ''), message)
    assert.deepEqual(data?.payload, allBytes)
    assert.equal(empty?.payload.length, 0)
    assert.deepEqual(large?.payload, Buffer.concat(Array.from({ length: 1024 }, () => allBytes)))
    assert.ok(joined?.payload.equals(big), 'a message of 2.2 MiB arrives whole, its continuation frames joined')
    assert.deepEqual(JSON.parse(done?.payload.toString('utf8') ?? ''), { exit_code: 0, signal: null })
  }

  const whole = new FrameDecoder(BUDGET)
  check(whole.push(stdout))
  assert.equal(whole.violation, null)

  let seed = 7
  for (let round = 0; round < 30; round++) {
    const decoder = new FrameDecoder(BUDGET)
    const got: Frame[] = []
    let offset = 0
    while (offset < stdout.length) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      const size = 1 + (seed % 70_000)
      got.push(...decoder.push(stdout.subarray(offset, offset + size)))
      offset += size
    }
    check(got)
  }
})

test('frames and messages encoded by the server are read back by Python\'s FrameReader byte for byte', () => {
  const job = Buffer.from(JSON.stringify({ runner: 'python', code: `# ${'é'.repeat(1_200_000)}\nprint(1)`, files: [{ name: 'a b.csv', size: 256 }] }))
  assert.ok(job.length > 2 * MAX_FRAME_PAYLOAD, 'the job needs continuation frames')
  const sent: Array<[number, Buffer]> = [
    [FrameType.job, job],
    [FrameType.data, allBytes],
    [FrameType.data, Buffer.alloc(0)],
    [FrameType.data, Buffer.alloc(DATA_CHUNK_BYTES, 0xa5)],
    [FrameType.message, Buffer.alloc(MAX_FRAME_PAYLOAD, 7)],
  ]
  const input = Buffer.concat(sent.map(([type, payload]) => encodeMessage(type as typeof FrameType.data, payload)))
  const echoed = JSON.parse(runPython(`
import json
reader = frames.FrameReader(sys.stdin.fileno(), ${BUDGET})
out = []
while True:
    try:
        kind, payload = reader.read()
    except frames.ChannelClosed:
        break
    out.append([kind, payload.hex()])
print(json.dumps(out))
`, input).toString('utf8'))
  assert.deepEqual(echoed, sent.map(([type, payload]) => [type, payload.toString('hex')]))
})

test('Python\'s read_json parses a job message and refuses a message of another type', () => {
  const job = { runner: 'steps', code: 'echo "$1"', args: ['ü', ''], cpu_seconds: 31, files: [] }
  const input = Buffer.concat([encodeJsonMessage(FrameType.job, job), encodeJsonMessage(FrameType.ready, {})])
  const out = JSON.parse(runPython(`
import json
reader = frames.FrameReader(sys.stdin.fileno(), ${BUDGET})
job = reader.read_json(frames.JOB)
try:
    reader.read_json(frames.JOB)
    refused = None
except frames.ProtocolError as error:
    refused = str(error)
print(json.dumps({"job": job, "refused": refused}))
`, input).toString('utf8'))
  assert.deepEqual(out.job, job)
  assert.match(out.refused, /expected frame 'J', got 'R'/)
})

test('both halves accept a frame payload of exactly MAX_PAYLOAD bytes and refuse one byte more', () => {
  const atLimit = encodeFrame(FrameType.data, Buffer.alloc(MAX_FRAME_PAYLOAD, 1))
  const overHeader = Buffer.from([FrameType.data, 0, 0, 0, 0])
  overHeader.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 1)
  // only the header of the oversize frame is sent: the reader must refuse it without waiting for the payload
  const out = JSON.parse(runPython(`
import json
reader = frames.FrameReader(sys.stdin.fileno(), ${BUDGET})
kind, payload = reader.read()
try:
    reader.read()
    refused = None
except frames.ProtocolError as error:
    refused = str(error)
print(json.dumps({"first": [kind, len(payload)], "refused": refused}))
`, Buffer.concat([atLimit, overHeader])).toString('utf8'))
  assert.deepEqual(out.first, [FrameType.data, MAX_FRAME_PAYLOAD])
  assert.equal(out.refused, `frame of ${MAX_FRAME_PAYLOAD + 1} bytes exceeds ${MAX_FRAME_PAYLOAD}`)

  const decoder = new FrameDecoder(BUDGET)
  assert.equal(decoder.push(atLimit).length, 1)
  assert.deepEqual(decoder.push(overHeader), [])
  assert.equal(decoder.violation, `a frame of ${MAX_FRAME_PAYLOAD + 1} bytes exceeds ${MAX_FRAME_PAYLOAD}`)
})

test('both halves refuse a message over their budget, even when every frame is within the frame limit', () => {
  const budget = 3 * MAX_FRAME_PAYLOAD
  const over = encodeMessage(FrameType.message, Buffer.alloc(budget + 1, 2))
  const out = runPython(`
reader = frames.FrameReader(sys.stdin.fileno(), ${budget})
try:
    reader.read()
    print("accepted")
except frames.ProtocolError as error:
    print(error)
`, over).toString('utf8').trim()
  assert.equal(out, `message of more than ${budget} bytes`)
  const decoder = new FrameDecoder(budget)
  assert.deepEqual(decoder.push(over), [])
  assert.equal(decoder.violation, `a message of more than ${budget} bytes`)
  assert.equal(new FrameDecoder(budget).push(encodeMessage(FrameType.message, Buffer.alloc(budget, 2)))[0]?.payload.length, budget)
})

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'
import {
  DATA_CHUNK_BYTES,
  encodeFrame,
  encodeJsonFrame,
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

/** Run `script` with sandbox/ on sys.path, `input` on stdin; returns stdout, fails the test on a non-zero exit. */
function runPython (script: string, input: Buffer = Buffer.alloc(0)): Buffer {
  const prelude = `import sys\nsys.path.insert(0, ${JSON.stringify(sandboxDir)})\nimport frames\n`
  const result = spawnSync(python, ['-c', prelude + script], { input, maxBuffer: 64 * 1024 * 1024 })
  if (result.error) throw result.error
  assert.equal(result.status, 0, `python exited ${result.status}: ${result.stderr.toString()}`)
  return result.stdout
}

const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

test('Python and TypeScript agree on the frame type codes, header size and size limits', () => {
  const constants = JSON.parse(runPython(`
import json
print(json.dumps({
  "job": frames.JOB, "data": frames.DATA, "ready": frames.READY, "started": frames.STARTED,
  "output": frames.OUTPUT, "outputEnd": frames.OUTPUT_END, "done": frames.DONE, "failed": frames.FAILED,
  "header": frames.HEADER.size, "maxPayload": frames.MAX_PAYLOAD, "chunk": frames.CHUNK,
}))`).toString('utf8'))
  assert.deepEqual(constants, {
    ...FrameType,
    header: HEADER_BYTES,
    maxPayload: MAX_FRAME_PAYLOAD,
    chunk: DATA_CHUNK_BYTES,
  })
})

test('frames written by Python send/send_json decode identically with FrameDecoder, in any chunking', () => {
  const message = { name: 'résumé 📈.csv', size: 3, nested: { list: [1, null, true], quote: '"\\' } }
  const stdout = runPython(`
import json
fd = sys.stdout.fileno()
frames.send(fd, frames.READY)
frames.send_json(fd, frames.OUTPUT, json.loads(${JSON.stringify(JSON.stringify(message))}))
frames.send(fd, frames.DATA, bytes(range(256)))
frames.send(fd, frames.DATA, b"")
frames.send(fd, frames.DATA, bytes(range(256)) * 1024)
frames.send_json(fd, frames.DONE, {"exit_code": 0, "signal": None, "fence": "00" * 16})
`)
  const check = (got: Frame[]) => {
    assert.deepEqual(got.map((frame) => frame.type), [FrameType.ready, FrameType.output, FrameType.data, FrameType.data, FrameType.data, FrameType.done])
    const [ready, output, data, empty, large, done] = got
    assert.equal(ready?.payload.length, 0)
    assert.deepEqual(JSON.parse(output?.payload.toString('utf8') ?? ''), message)
    assert.deepEqual(data?.payload, allBytes)
    assert.equal(empty?.payload.length, 0)
    assert.deepEqual(large?.payload, Buffer.concat(Array.from({ length: 1024 }, () => allBytes)))
    assert.deepEqual(JSON.parse(done?.payload.toString('utf8') ?? ''), { exit_code: 0, signal: null, fence: '00'.repeat(16) })
  }

  const whole = new FrameDecoder()
  check(whole.push(stdout))
  assert.equal(whole.violation, null)

  let seed = 7
  for (let round = 0; round < 50; round++) {
    const decoder = new FrameDecoder()
    const got: Frame[] = []
    for (let offset = 0; offset < stdout.length;) {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
      const size = 1 + (seed % 70_000)
      got.push(...decoder.push(stdout.subarray(offset, offset + size)))
      offset += size
    }
    check(got)
  }
})

test('frames encoded by encodeFrame are read back by Python\'s FrameReader byte for byte', () => {
  const sent: Array<[number, Buffer]> = [
    [FrameType.job, Buffer.from(JSON.stringify({ lang: 'python', code: 'print("é")', files: [{ name: 'a b.csv', size: 256 }] }))],
    [FrameType.data, allBytes],
    [FrameType.data, Buffer.alloc(0)],
    [FrameType.data, Buffer.alloc(DATA_CHUNK_BYTES, 0xa5)],
    [FrameType.ready, Buffer.alloc(0)],
  ]
  const input = Buffer.concat(sent.map(([type, payload]) => encodeFrame(type as typeof FrameType.data, payload)))
  const echoed = JSON.parse(runPython(`
import json
reader = frames.FrameReader(sys.stdin.fileno())
out = []
while True:
    try:
        kind, payload = reader.read()
    except frames.ProtocolError as error:
        assert str(error) == "control channel closed", error
        break
    out.append([kind, payload.hex()])
print(json.dumps(out))
`, input).toString('utf8'))
  assert.deepEqual(echoed, sent.map(([type, payload]) => [type, payload.toString('hex')]))
})

test('Python\'s read_json parses an encodeJsonFrame job and refuses a frame of another type', () => {
  const job = { lang: 'bash', code: 'echo "$1"', args: ['ü', ''], cpu_seconds: 31, files: [] }
  const input = Buffer.concat([encodeJsonFrame(FrameType.job, job), encodeJsonFrame(FrameType.ready, {})])
  const out = JSON.parse(runPython(`
import json
reader = frames.FrameReader(sys.stdin.fileno())
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

test('both halves accept a payload of exactly MAX_PAYLOAD bytes and refuse one byte more', () => {
  const atLimit = encodeFrame(FrameType.data, Buffer.alloc(MAX_FRAME_PAYLOAD, 1))
  const overHeader = Buffer.from([FrameType.data, 0, 0, 0, 0])
  overHeader.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 1)
  // only the header of the oversize frame is sent: the reader must refuse it without waiting for the payload
  const out = JSON.parse(runPython(`
import json
reader = frames.FrameReader(sys.stdin.fileno())
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

  const decoder = new FrameDecoder()
  assert.equal(decoder.push(atLimit).length, 1)
  assert.deepEqual(decoder.push(overHeader), [])
  assert.equal(decoder.violation, `frame of ${MAX_FRAME_PAYLOAD + 1} bytes exceeds ${MAX_FRAME_PAYLOAD}`)
})

test('a Python frame over MAX_PAYLOAD written by send is refused by FrameDecoder', () => {
  const stdout = runPython(`
frames.send(sys.stdout.fileno(), frames.DATA, b"x" * (frames.MAX_PAYLOAD + 1))
`)
  assert.equal(stdout.length, HEADER_BYTES + MAX_FRAME_PAYLOAD + 1)
  const decoder = new FrameDecoder()
  assert.deepEqual(decoder.push(stdout), [])
  assert.match(decoder.violation ?? '', /exceeds/)
})

import { createHash } from 'node:crypto'

/**
 * The server's half of the worker protocol (the other half is sandbox/frames.py; the reference is
 * sandbox/README.md). A frame is 1 type byte, a 4-byte big-endian payload length, then the payload. A
 * message larger than one frame travels as `continued` frames followed by one frame of its own type.
 *
 * Every worker has its own three connections (control, stdout, stderr) that nothing else holds, so a
 * stream's end is its EOF. Within a live worker's streams, each run's output ends at a marker the server
 * chose for that run (16 random bytes sent with the job) and the worker writes after the run's last byte.
 */

export const FrameType = {
  continued: 0x2b, // +  both ways: the first parts of a message whose last frame carries its type
  data: 0x44, // D  both ways: raw bytes of an input (to the worker) or an output file (from it)
  message: 0x4d, // M  both ways: JSON between the server and the running code (tool calls, display data)
  job: 0x4a, // J  server -> worker: JSON job, followed by the inputs' DATA frames
  ready: 0x52, // R  worker -> server: isolated and waiting for a job
  started: 0x53, // S  inputs staged, user code starting
  output: 0x4f, // O  an output file begins: JSON {name}
  outputEnd: 0x45, // E  the output file ends: JSON {size}
  done: 0x58, // X  the run is over: JSON {exit_code, signal, deleted, notes, discarded, ...}
  failed: 0x46, // F  JSON {message}: the worker could not set itself up or broke down
  prepared: 0x50, // P  JSON {prepare_ms}: an interpreter was started ahead and waits for its program
  terminal: 0x54, // T  both ways, in a terminal run: 4-byte big-endian channel number, then raw bytes
  artifact: 0x41, // A  JSON {files: [{name, size}]}: the build's artifacts, DATA frames follow (compile cache)
} as const

export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType]

export const HEADER_BYTES = 5
/** Frames from a worker are untrusted: anything larger is a protocol violation, not an allocation. */
export const MAX_FRAME_PAYLOAD = 1 << 20
export const DATA_CHUNK_BYTES = 256 * 1024
export const MARKER_BYTES = 16
export const CHANNEL_BYTES = 4

/** Bytes of one terminal channel (sandbox/terminal.py), in frames of at most MAX_FRAME_PAYLOAD. */
export function encodeChannelBytes (channel: number, bytes: Uint8Array): Buffer {
  const parts: Uint8Array[] = []
  const room = MAX_FRAME_PAYLOAD - CHANNEL_BYTES
  for (let offset = 0; offset === 0 || offset < bytes.length; offset += room) {
    const piece = bytes.subarray(offset, offset + room)
    const header = frameHeader(FrameType.terminal, CHANNEL_BYTES + piece.length)
    const number = Buffer.allocUnsafe(CHANNEL_BYTES)
    number.writeUInt32BE(channel, 0)
    parts.push(header, number, piece)
  }
  return Buffer.concat(parts)
}

export interface Frame { type: number, payload: Buffer }

function frameHeader (type: number, length: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES)
  header.writeUInt8(type, 0)
  header.writeUInt32BE(length, 1)
  return header
}

/** One frame; the payload must fit in a frame (DATA chunks, small messages). */
export function encodeFrame (type: FrameTypeCode, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new RangeError(`a frame payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`)
  return Buffer.concat([frameHeader(type, payload.length), payload])
}

/** One message of any size: `continued` frames for all but its last MAX_FRAME_PAYLOAD bytes. */
export function encodeMessage (type: FrameTypeCode, payload: Uint8Array): Buffer {
  const parts: Uint8Array[] = []
  let offset = 0
  for (; payload.length - offset > MAX_FRAME_PAYLOAD; offset += MAX_FRAME_PAYLOAD) {
    parts.push(frameHeader(FrameType.continued, MAX_FRAME_PAYLOAD), payload.subarray(offset, offset + MAX_FRAME_PAYLOAD))
  }
  parts.push(frameHeader(type, payload.length - offset), payload.subarray(offset))
  return Buffer.concat(parts)
}

export function encodeJsonMessage (type: FrameTypeCode, message: unknown): Buffer {
  return encodeMessage(type, Buffer.from(JSON.stringify(message)))
}

/**
 * Parser for a worker's control stream: whole messages (continuation frames joined), at most
 * `maxMessageBytes` each. A violation (a frame over the limit, a message over the budget) is recorded
 * once, and nothing is parsed after it: the worker is then ended by its owner.
 */
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0)
  private parts: Buffer[] = []
  private partsBytes = 0
  violation: string | null = null

  constructor (private readonly maxMessageBytes: number) {}

  push (chunk: Buffer): Frame[] {
    if (this.violation !== null) return []
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    const frames: Frame[] = []
    let offset = 0
    while (this.buffer.length - offset >= HEADER_BYTES) {
      const type = this.buffer.readUInt8(offset)
      const length = this.buffer.readUInt32BE(offset + 1)
      if (length > MAX_FRAME_PAYLOAD) {
        this.violation = `a frame of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`
        break
      }
      if (this.partsBytes + length > this.maxMessageBytes) {
        this.violation = `a message of more than ${this.maxMessageBytes} bytes`
        break
      }
      if (this.buffer.length - offset < HEADER_BYTES + length) break
      const payload = this.buffer.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length)
      offset += HEADER_BYTES + length
      if (type === FrameType.continued) {
        this.parts.push(Buffer.from(payload))
        this.partsBytes += length
        continue
      }
      frames.push({ type, payload: this.parts.length === 0 ? payload : Buffer.concat([...this.parts, payload]) })
      this.parts = []
      this.partsBytes = 0
    }
    this.buffer = this.violation === null ? this.buffer.subarray(offset) : Buffer.alloc(0)
    return frames
  }

  /** Bytes of an unfinished frame or message: left over when the stream ends mid-frame. */
  get pendingBytes (): number { return this.buffer.length + this.partsBytes }
}

/**
 * The i-th sync marker of a run: a cell (sandbox/cells.py) writes it on stdout and stderr before it sends a
 * message (a plot, a result, an error), so the server can put the message after exactly the output that
 * came before it, although the two travel on different connections. Derived from a per-run seed on both
 * sides, so the server knows each one before its bytes arrive.
 */
export function syncMarker (seed: Buffer, index: number): Buffer {
  const counter = Buffer.alloc(4)
  counter.writeUInt32BE(index)
  return createHash('sha256').update(seed).update(counter).digest().subarray(0, MARKER_BYTES)
}

/**
 * One run's part of a worker's stdout or stderr: the bytes before the run's marker, delivered as they
 * come. Only a tail that could be the start of a marker is held back until more arrive: holding back
 * a fixed MARKER_BYTES - 1 kept a cell's short progress line (`print("epoch 1")`) from its notebook
 * until the cell printed more or ended. Bytes after the marker (written by processes the run left running) are handed back. With a
 * sync seed, the run's sync markers are taken out of the stream too, and `untilSync(i)` resolves once the
 * stream has passed the i-th.
 */
/** The length of the longest tail of `window`, shorter than `marker`, that `marker` begins with. */
function markerStartAtEnd (window: Buffer, marker: Buffer): number {
  for (let length = Math.min(window.length, marker.length - 1); length > 0; length--) {
    if (window.subarray(window.length - length).equals(marker.subarray(0, length))) return length
  }
  return 0
}

export class RunStream {
  private held: Buffer = Buffer.alloc(0)
  private ended = false
  private nextSync = 0
  private syncAhead: Buffer | null
  private readonly syncWaiters: Array<{ index: number, resolve: () => void }> = []

  constructor (private readonly marker: Buffer, private readonly deliver: (chunk: Buffer) => void, private readonly syncSeed: Buffer | null = null) {
    this.syncAhead = syncSeed === null ? null : syncMarker(syncSeed, 0)
  }

  get isEnded (): boolean { return this.ended }

  /** Returns the bytes after the marker once it is found (the stream then belongs to the next run). */
  push (chunk: Buffer): Buffer | null {
    if (this.ended) return chunk
    let window = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk])
    for (;;) {
      const end = window.indexOf(this.marker)
      const sync = this.syncAhead === null ? -1 : window.indexOf(this.syncAhead)
      if (sync >= 0 && (end < 0 || sync < end)) {
        if (sync > 0) this.deliver(window.subarray(0, sync))
        window = window.subarray(sync + MARKER_BYTES)
        this.passSync()
        continue
      }
      if (end >= 0) {
        if (end > 0) this.deliver(window.subarray(0, end))
        this.finish()
        return window.subarray(end + this.marker.length)
      }
      break
    }
    const keep = Math.max(markerStartAtEnd(window, this.marker), this.syncAhead === null ? 0 : markerStartAtEnd(window, this.syncAhead))
    if (window.length > keep) this.deliver(window.subarray(0, window.length - keep))
    this.held = Buffer.from(window.subarray(window.length - keep))
    return null
  }

  /** The stream closed (the worker is gone): what was held back was the run's too. */
  end (): void {
    if (this.ended) return
    if (this.held.length > 0) this.deliver(this.held)
    this.finish()
  }

  /** Resolves once the stream has passed sync marker `index` (or ended). */
  untilSync (index: number): Promise<void> {
    if (this.ended || index < this.nextSync) return Promise.resolve()
    return new Promise((resolve) => this.syncWaiters.push({ index, resolve }))
  }

  private passSync (): void {
    this.nextSync++
    this.syncAhead = this.syncSeed === null ? null : syncMarker(this.syncSeed, this.nextSync)
    for (const waiter of this.syncWaiters.filter((candidate) => candidate.index < this.nextSync)) {
      this.syncWaiters.splice(this.syncWaiters.indexOf(waiter), 1)
      waiter.resolve()
    }
  }

  private finish (): void {
    this.held = Buffer.alloc(0)
    this.ended = true
    for (const waiter of this.syncWaiters.splice(0)) waiter.resolve()
  }
}

/**
 * The server's half of the worker protocol (the other half is sandbox/frames.py; the reference is
 * sandbox/README.md). A frame is 1 type byte, a 4-byte big-endian payload length, then the payload.
 *
 * A worker slot's three sockets are reused by successive workers, so every stream also carries fences:
 * 16 random bytes written after a worker's last byte (by the worker itself when it finishes, and by the
 * zygote once the worker's whole pid namespace is gone). Nobody can forge the zygote's fence: it is drawn
 * after the worker is dead. Everything before a fence belongs to that worker; nothing after it does.
 */

export const FrameType = {
  job: 0x4a, // J  server -> worker: JSON job, followed by the inputs' DATA frames
  data: 0x44, // D  raw bytes of an input (to the worker) or an output (from it)
  ready: 0x52, // R  worker -> server: isolated and waiting for a job
  started: 0x53, // S  inputs staged, user code starting
  output: 0x4f, // O  an output file begins: JSON {name}
  outputEnd: 0x45, // E  the output file ends: JSON {size}
  done: 0x58, // X  JSON {exit_code, signal, deleted, notes, discarded, fence}
  failed: 0x46, // F  JSON {message}: the worker could not set itself up
} as const

export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType]

export const HEADER_BYTES = 5
/** Frames from a worker are untrusted: anything larger is a protocol violation, not an allocation. */
export const MAX_FRAME_PAYLOAD = 1 << 20
export const DATA_CHUNK_BYTES = 256 * 1024
export const FENCE_BYTES = 16

export interface Frame { type: number, payload: Buffer }

export function encodeFrame (type: FrameTypeCode, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES)
  header.writeUInt8(type, 0)
  header.writeUInt32BE(payload.length, 1)
  return Buffer.concat([header, payload])
}

export function encodeJsonFrame (type: FrameTypeCode, message: unknown): Buffer {
  return encodeFrame(type, Buffer.from(JSON.stringify(message)))
}

export class ProtocolError extends Error {
  override name = 'ProtocolError'
}

/** Keep at least this much of a stream's end: a fence not yet announced may be in it. */
const TAIL_BYTES = 2 * FENCE_BYTES

function indexOfFence (window: Buffer, fences: Buffer[]): { at: number, fence: Buffer } | null {
  let best: { at: number, fence: Buffer } | null = null
  for (const fence of fences) {
    const at = window.indexOf(fence)
    if (at >= 0 && (best === null || at < best.at)) best = { at, fence }
  }
  return best
}

/**
 * Frame parser for a slot's control socket. It delivers the worker's frames until the worker's last
 * frame (done or failed) or a protocol violation, then only watches for the zygote's fence, after
 * which the socket is clean for the next worker.
 *
 * The zygote's fence may arrive before it is announced. If the worker died in the middle of a frame,
 * the fence bytes can then complete that frame and be parsed away as its payload; so the last bytes of
 * the raw stream are kept apart and searched too (nothing follows the zygote's fence).
 */
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0)
  private recent: Buffer = Buffer.alloc(0)
  private fence: Buffer | null = null
  private state: 'parsing' | 'finished' | 'fenced' = 'parsing'
  /**
   * While a job runs, the worker may die mid-frame at any time and the zygote's fence follow: a frame
   * ending in the stream's last FENCE_BYTES bytes could have been completed by the fence's first bytes,
   * so it is held back until more bytes (at the latest the worker's own fence after `done`) arrive.
   */
  holdBack = false
  violation: string | null = null

  get isFenced (): boolean { return this.state === 'fenced' }

  push (chunk: Buffer): Frame[] {
    if (this.state === 'fenced') return []
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    this.recent = tail(Buffer.concat([this.recent, chunk]), TAIL_BYTES)
    return this.drain()
  }

  /** The zygote's fence, announced on its control channel once the worker is gone. */
  setFence (fence: Buffer): Frame[] {
    this.fence = fence
    return this.state === 'fenced' ? [] : this.drain()
  }

  reset (): void {
    this.buffer = Buffer.alloc(0)
    this.recent = Buffer.alloc(0)
    this.fence = null
    this.state = 'parsing'
    this.holdBack = false
    this.violation = null
  }

  private drain (): Frame[] {
    const found = this.fence === null ? null : indexOfFence(this.buffer, [this.fence])
    const limit = found !== null
      ? found.at
      : this.holdBack || this.fence !== null ? this.buffer.length - FENCE_BYTES : this.buffer.length
    const frames = this.state === 'parsing' ? this.parse(limit) : []
    if (found !== null || (this.fence !== null && this.recent.includes(this.fence))) {
      this.state = 'fenced'
      this.buffer = Buffer.alloc(0)
      this.recent = Buffer.alloc(0)
    } else if (this.state === 'finished') {
      this.buffer = tail(this.buffer, TAIL_BYTES)
    }
    return frames
  }

  private parse (limit: number): Frame[] {
    const frames: Frame[] = []
    let offset = 0
    while (this.state === 'parsing' && limit - offset >= HEADER_BYTES) {
      const type = this.buffer.readUInt8(offset)
      const length = this.buffer.readUInt32BE(offset + 1)
      if (length > MAX_FRAME_PAYLOAD) {
        this.violation = `frame of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`
        this.state = 'finished'
        break
      }
      if (limit - offset < HEADER_BYTES + length) break
      frames.push({ type, payload: this.buffer.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length) })
      offset += HEADER_BYTES + length
      if (type === FrameType.done || type === FrameType.failed) this.state = 'finished'
    }
    this.buffer = this.buffer.subarray(offset)
    return frames
  }
}

function tail (bytes: Buffer, size: number): Buffer {
  return bytes.length <= size ? bytes : bytes.subarray(bytes.length - size)
}

/**
 * Collects one output stream (stdout or stderr) of a worker, keeping at most `maxBytes`. The worker's
 * bytes are those before the first fence in the stream: its own (written when it finishes) or the
 * zygote's, whichever comes first, in whatever order they are announced. Bytes after the worker's fence
 * are read and dropped until the zygote's fence cleans the socket.
 */
export class FencedCollector {
  private readonly chunks: Buffer[] = []
  private keptBytes = 0
  private receivedBytes = 0
  private recent: Buffer = Buffer.alloc(0)
  private readonly fences: Buffer[] = []
  private zygoteFence: Buffer | null = null
  private outputBytes: number | null = null
  private overflowReported = false
  private fenced = false

  constructor (private readonly maxBytes: number, private readonly onOverflow: () => void) {}

  /** The worker's bytes (at most maxBytes), once a fence has closed them; null until then. */
  get output (): Buffer | null {
    return this.outputBytes === null ? null : Buffer.concat(this.chunks).subarray(0, Math.min(this.outputBytes, this.maxBytes))
  }

  get truncated (): boolean { return (this.outputBytes ?? this.receivedBytes) > this.maxBytes }
  get isFenced (): boolean { return this.fenced }

  push (chunk: Buffer): void {
    if (this.fenced) return
    const windowStart = this.receivedBytes - this.recent.length
    const window = Buffer.concat([this.recent, chunk])
    this.receivedBytes += chunk.length
    this.recent = tail(window, TAIL_BYTES)
    this.search(window, windowStart)
    if (this.outputBytes === null) {
      this.keep(chunk)
    } else {
      // keep up to the fence only: what follows it is not the worker's output
      this.keep(chunk.subarray(0, Math.max(0, this.outputBytes - (this.receivedBytes - chunk.length))))
    }
    this.checkOverflow()
  }

  /** Announce a fence: the worker's own (from its done frame) or the zygote's (the worker is gone). */
  expectFence (fence: Buffer, fromZygote: boolean): void {
    if (fromZygote) this.zygoteFence = fence
    this.fences.push(fence)
    // the fence may have arrived before its announcement, even after the zygote's own fence
    this.search(Buffer.concat(this.chunks), 0)
    if (!this.fenced) this.search(this.recent, this.receivedBytes - this.recent.length)
    this.checkOverflow()
  }

  private search (window: Buffer, windowStart: number): void {
    for (const fence of [...this.fences]) {
      const at = window.indexOf(fence)
      if (at < 0) continue
      const position = windowStart + at
      if (this.outputBytes === null || position < this.outputBytes) this.outputBytes = position
      if (fence === this.zygoteFence) this.fenced = true
      this.fences.splice(this.fences.indexOf(fence), 1)
    }
  }

  private keep (bytes: Buffer): void {
    const room = this.maxBytes + FENCE_BYTES - this.keptBytes
    if (room > 0 && bytes.length > 0) {
      const slice = bytes.subarray(0, room)
      this.chunks.push(slice)
      this.keptBytes += slice.length
    }
  }

  /**
   * Report an overflow once: as soon as it is certain. While the output is open, a fence not yet
   * announced may be in its last FENCE_BYTES, so only more than that counts.
   */
  private checkOverflow (): void {
    if (this.overflowReported) return
    const over = this.outputBytes === null
      ? this.receivedBytes > this.maxBytes + FENCE_BYTES
      : this.outputBytes > this.maxBytes
    if (!over) return
    this.overflowReported = true
    this.onOverflow()
  }
}

import { randomUUID } from 'node:crypto'

/**
 * Jupyter messaging (protocol 5.3) as Warden's kernels speak it over the WebSocket: the message shape, and
 * its two framings (../shared/spec/openwebui-jupyter.md §6.2): legacy JSON text, which Open WebUI uses,
 * and the binary `v1.kernel.websocket.jupyter.org` frames, which @jupyterlab/services asks for.
 */

export const V1_SUBPROTOCOL = 'v1.kernel.websocket.jupyter.org'
export const PROTOCOL_VERSION = '5.3'

export type Channel = 'shell' | 'iopub' | 'control' | 'stdin'

export interface Header {
  msg_id: string
  msg_type: string
  username: string
  session: string
  date: string
  version: string
  [key: string]: unknown
}

export interface JupyterMessage {
  channel: Channel
  header: Header
  parent_header: Partial<Header> | Record<string, never>
  metadata: Record<string, unknown>
  content: Record<string, unknown>
  buffers?: unknown[]
}

/** A message from the kernel: its header is new, its parent is the request's header, copied whole. */
export function reply (session: string, channel: Channel, msgType: string, content: Record<string, unknown>, parent: Partial<Header> | null, metadata: Record<string, unknown> = {}): JupyterMessage {
  return {
    channel,
    header: { msg_id: randomUUID().replaceAll('-', ''), msg_type: msgType, username: 'kernel', session, date: new Date().toISOString(), version: PROTOCOL_VERSION },
    parent_header: parent ?? {},
    metadata,
    content,
    buffers: [],
  }
}

/** Legacy framing: one JSON text frame, with `msg_id` and `msg_type` also at the top (Open WebUI reads them there). */
export function encodeLegacy (message: JupyterMessage): string {
  return JSON.stringify({ ...message, msg_id: message.header.msg_id, msg_type: message.header.msg_type })
}

/** v1 framing: u64 LE count n, n u64 LE offsets, then channel, header, parent_header, metadata, content. */
export function encodeV1 (message: JupyterMessage): Buffer {
  const parts = [message.channel, message.header, message.parent_header, message.metadata, message.content]
    .map((part) => Buffer.from(typeof part === 'string' ? part : JSON.stringify(part)))
  const count = parts.length + 1
  const head = Buffer.alloc(8 * (count + 1))
  head.writeBigUInt64LE(BigInt(count), 0)
  let offset = head.length
  parts.forEach((part, index) => {
    head.writeBigUInt64LE(BigInt(offset), 8 * (index + 1))
    offset += part.length
  })
  head.writeBigUInt64LE(BigInt(offset), 8 * count)
  return Buffer.concat([head, ...parts])
}

export class MessageError extends Error {
  override name = 'MessageError'
}

/** A client's message in either framing; anything malformed is a MessageError (the socket is then closed). */
export function decodeMessage (data: Buffer | string, binary: boolean): JupyterMessage {
  const fields = binary ? decodeV1Parts(Buffer.isBuffer(data) ? data : Buffer.from(data)) : decodeLegacy(String(data))
  const header = fields.header as Header
  if (typeof header !== 'object' || header === null || typeof header.msg_id !== 'string' || typeof header.msg_type !== 'string') {
    throw new MessageError('a message needs a header with msg_id and msg_type')
  }
  const channel = fields.channel === undefined || fields.channel === null ? 'shell' : fields.channel
  if (!['shell', 'iopub', 'control', 'stdin'].includes(String(channel))) throw new MessageError(`unknown channel ${String(channel)}`)
  return {
    channel: channel as Channel,
    header,
    parent_header: isObject(fields.parent_header) ? fields.parent_header : {},
    metadata: isObject(fields.metadata) ? fields.metadata : {},
    content: isObject(fields.content) ? fields.content : {},
  }
}

function decodeLegacy (text: string): Record<string, unknown> {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new MessageError('a text frame must be a JSON message')
  }
  if (!isObject(parsed)) throw new MessageError('a message must be a JSON object')
  return parsed
}

function decodeV1Parts (data: Buffer): Record<string, unknown> {
  if (data.length < 8) throw new MessageError('a v1 frame is too short')
  const count = Number(data.readBigUInt64LE(0))
  if (count < 5 || count > 64 || data.length < 8 * (count + 1)) throw new MessageError('a v1 frame has a bad offset table')
  const offsets = Array.from({ length: count }, (_, index) => Number(data.readBigUInt64LE(8 * (index + 1))))
  const part = (index: number) => {
    const start = offsets[index] as number
    const end = index + 1 < count ? offsets[index + 1] as number : data.length
    if (start > end || end > data.length) throw new MessageError('a v1 frame has a bad offset')
    return data.subarray(start, end).toString('utf8')
  }
  const json = (index: number) => {
    try {
      return JSON.parse(part(index)) as unknown
    } catch {
      throw new MessageError('a v1 frame part is not JSON')
    }
  }
  return { channel: part(0), header: json(1), parent_header: json(2), metadata: json(3), content: json(4) }
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

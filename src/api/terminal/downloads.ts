import { PassThrough } from 'node:stream'
import type { TerminalJail } from '../../terminal/terminal-jail.ts'

/** What the jail says of a file before its bytes follow on the channel. */
export interface DownloadInfo { path: string, size: number, mime: string, name: string }

const FIRST_WINDOW_BYTES = 256 * 1024

/**
 * A file of the jail as a stream: `op` (download, archive) opens it on a channel of its own, and the jail
 * sends more only as the HTTP client takes it (a client that reads nothing stops the transfer there).
 */
export async function streamFromJail (jail: TerminalJail, op: 'download' | 'archive', args: Record<string, unknown>): Promise<{ info: DownloadInfo, body: PassThrough }> {
  const body = new PassThrough()
  const channel = jail.openChannel({
    onBytes: (chunk) => {
      const grant = () => jail.notify('window', { channel, bytes: chunk.length })
      if (body.write(chunk)) grant()
      else body.once('drain', grant)
    },
    onEof: () => body.end(),
  })
  body.on('close', () => {
    jail.closeChannel(channel)
    jail.notify('drop_channel', { channel })
  })
  try {
    const info = await jail.request<DownloadInfo>(op, { ...args, channel, window: FIRST_WINDOW_BYTES })
    return { info, body }
  } catch (error) {
    jail.closeChannel(channel)
    body.destroy()
    throw error
  }
}

/** A whole file of the jail, at most `maxBytes` (a read_file image, a small preview). */
export async function readFromJail (jail: TerminalJail, path: string, cwd: string, maxBytes: number): Promise<{ info: DownloadInfo, bytes: Buffer } | null> {
  const { info, body } = await streamFromJail(jail, 'download', { path, cwd })
  if (info.size > maxBytes) {
    body.destroy()
    return null
  }
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return { info, bytes: Buffer.concat(chunks) }
}

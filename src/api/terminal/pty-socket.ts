import type { WebSocket } from '@fastify/websocket'
import type { FastifyRequest } from 'fastify'
import type { Identity } from '../../auth/identity.ts'
import type { Pty, Terminals } from '../../terminal/terminals.ts'

export interface PtySocketDeps {
  terminals: Terminals
  /** the owner a token (and Open WebUI's `?user_id=`) stands for; throws for a wrong token */
  ownerOf: (token: string | null, userId: unknown) => Identity
}

/** Open Terminal waits this long for the first frame, the auth frame (spec §2.3). */
const AUTH_TIMEOUT_MS = 10_000
const CLOSE_UNAUTHORIZED = 4001
const MAX_COLS = 1000
const MAX_ROWS = 1000

/**
 * The terminal pane's WebSocket (spec §2.3): the first text frame is `{"type":"auth","token":…}`, then
 * binary frames are keystrokes and the shell's output; a text `{"type":"resize"}` resizes, any other text
 * (Open WebUI's pings) is dropped. Open WebUI's proxy names the user only in `?user_id=` (spec §3.4).
 */
export function ptySocketHandler (deps: PtySocketDeps) {
  return (socket: WebSocket, request: FastifyRequest): void => {
    const params = request.params as { id: string }
    const { user_id: userId } = request.query as { user_id?: unknown }
    let pty: Pty | null = null
    const timer = setTimeout(() => socket.close(CLOSE_UNAUTHORIZED, 'Authentication timed out'), AUTH_TIMEOUT_MS)
    socket.on('close', () => {
      clearTimeout(timer)
      pty?.close()
    })
    socket.on('message', (data, isBinary) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)
      if (pty === null) {
        clearTimeout(timer)
        pty = authenticate(bytes, isBinary, params.id, userId)
        if (pty === null) {
          socket.close(CLOSE_UNAUTHORIZED, 'Invalid API key')
          return
        }
        const underlying = (socket as unknown as { _socket?: { pause: () => void, resume: () => void } })._socket
        pty.attach({
          send: (chunk, written) => socket.send(chunk, { binary: true }, () => written()),
          end: () => socket.close(1000, 'The terminal ended'),
          pause: (paused) => paused ? underlying?.pause() : underlying?.resume(),
        })
        return
      }
      if (isBinary) return pty.keystrokes(bytes)
      const message = parseJson(bytes.toString('utf8'))
      if (message?.type === 'resize' && Number.isInteger(message.cols) && Number.isInteger(message.rows)) {
        pty.resize(Math.min(Math.max(Number(message.cols), 1), MAX_COLS), Math.min(Math.max(Number(message.rows), 1), MAX_ROWS))
      }
    })
  }

  function authenticate (bytes: Buffer, isBinary: boolean, id: string, userId: unknown): Pty | null {
    if (isBinary) return null
    const message = parseJson(bytes.toString('utf8'))
    if (message?.type !== 'auth' || typeof message.token !== 'string') return null
    try {
      const owner = deps.ownerOf(message.token, userId)
      // without ?user_id= (direct mode), the key's own terminals: any user under it
      return deps.terminals.pty(id, typeof userId === 'string' && userId !== '' ? owner : { tenant: owner.tenant, user: null })
    } catch {
      return null
    }
  }
}

function parseJson (text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : null
  } catch {
    return null
  }
}

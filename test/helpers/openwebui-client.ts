import { randomUUID } from 'node:crypto'
import WebSocket from 'ws'

/**
 * A client that talks to a Jupyter server the way Open WebUI's `execute_code_jupyter` does, written from
 * ../shared/spec/openwebui-jupyter.md §3 (not copied from Open WebUI): optional password login, an
 * empty-body POST api/kernels, a WebSocket without subprotocol (legacy JSON) with `?token=` unencoded,
 * exactly one execute_request, messages read by their top-level msg_type until the first `idle` of the
 * request, then DELETE. The WebSocket refuses messages over 1 MiB, as Python's `websockets` does.
 */

export interface OpenWebUIOptions {
  /** the Jupyter URL as configured in Open WebUI, with or without a trailing slash */
  url: string
  token?: string
  password?: string
  /** Open WebUI's per-message timeout (default 60 s) */
  timeoutMs?: number
  /** do not DELETE the kernel afterwards (a test that needs it) */
  keepKernel?: boolean
  /** called once the execute_request is sent (a test that acts while the code runs) */
  onSent?: (kernelId: string) => void
}

export interface OpenWebUIResult {
  stdout: string
  stderr: string
  result: string
  kernelId: string
  /** every frame received, parsed, with its size in bytes */
  frames: Array<{ bytes: number, message: Record<string, any> }>
  /** the WebSocket closed with this code before idle (1009: a message over 1 MiB) */
  closeCode: number | null
}

const MAX_SIZE = 1024 * 1024

export async function executeLikeOpenWebUI (code: string, options: OpenWebUIOptions): Promise<OpenWebUIResult> {
  const base = options.url.endsWith('/') ? options.url : `${options.url}/`
  const query = options.token !== undefined ? `?token=${options.token}` : ''
  const headers: Record<string, string> = {}
  if (options.password !== undefined && options.token === undefined) Object.assign(headers, await logIn(base, options.password))
  const created = await fetch(`${base}api/kernels${query}`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': '0' },
    body: '',
  })
  if (created.status >= 400) throw new Error(`POST api/kernels answered ${created.status}: ${await created.text()}`)
  if (!(created.headers.get('content-type') ?? '').startsWith('application/json')) throw new Error('Attempt to decode JSON with unexpected mimetype')
  const kernelId = (await created.json() as { id: string }).id
  const outcome: OpenWebUIResult = { stdout: '', stderr: '', result: '', kernelId, frames: [], closeCode: null }
  const results: string[] = []
  try {
    const socket = new WebSocket(`${base.replace('http', 'ws')}api/kernels/${kernelId}/channels${query}`, { headers, maxPayload: MAX_SIZE })
    await new Promise<void>((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
    const msgId = randomUUID().replaceAll('-', '')
    socket.send(JSON.stringify({
      header: { msg_id: msgId, msg_type: 'execute_request', username: 'user', session: randomUUID().replaceAll('-', ''), date: '', version: '5.3' },
      parent_header: {},
      metadata: {},
      content: { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true },
      channel: 'shell',
    }))
    options.onSent?.(kernelId)
    await new Promise<void>((resolve) => {
      let timer = setTimeout(onTimeout, options.timeoutMs ?? 60_000)
      function onTimeout () {
        outcome.stderr += '\nExecution timed out.'
        finish()
      }
      function finish () {
        clearTimeout(timer)
        socket.off('message', onMessage)
        socket.off('close', onClose)
        resolve()
      }
      function onClose (closeCode: number) {
        outcome.closeCode = closeCode
        outcome.stderr = `Error: sent ${closeCode}`
        finish()
      }
      function onMessage (data: Buffer) {
        clearTimeout(timer)
        timer = setTimeout(onTimeout, options.timeoutMs ?? 60_000)
        const message = JSON.parse(String(data)) as Record<string, any>
        outcome.frames.push({ bytes: data.length, message })
        if (message.parent_header?.msg_id !== msgId) return
        const type = message.msg_type
        if (type === 'stream') {
          if (message.content.name === 'stdout') outcome.stdout += message.content.text
          else outcome.stderr += message.content.text
        } else if (type === 'execute_result' || type === 'display_data') {
          const data = message.content.data
          if (data['image/png'] !== undefined) results.push(`data:image/png;base64,${data['image/png']}`)
          else if (data['text/plain'] !== undefined) results.push(data['text/plain'])
        } else if (type === 'error') {
          outcome.stderr += message.content.traceback.join('\n')
        } else if (type === 'status' && message.content.execution_state === 'idle') {
          finish()
        }
      }
      socket.on('message', onMessage)
      socket.once('close', onClose)
    })
    socket.close()
  } finally {
    if (options.keepKernel !== true) await fetch(`${base}api/kernels/${kernelId}${query}`, { method: 'DELETE', headers })
  }
  return { ...outcome, stdout: outcome.stdout.trim(), stderr: outcome.stderr.trim(), result: results.join('\n').trim() }
}

/** Password mode: GET login sets `_xsrf`; a form POST with it and the password gets the session cookie. */
async function logIn (base: string, password: string): Promise<Record<string, string>> {
  const page = await fetch(`${base}login`)
  if (page.status >= 400) throw new Error(`GET login answered ${page.status}`)
  const cookies = new Map<string, string>()
  const remember = (response: Response) => {
    for (const line of response.headers.getSetCookie()) {
      const [pair = ''] = line.split(';')
      const [name = '', value = ''] = pair.split('=')
      cookies.set(name.trim(), value.trim())
    }
  }
  remember(page)
  const xsrf = cookies.get('_xsrf')
  if (xsrf === undefined) throw new Error("Error: '_xsrf'")
  const cookieHeader = () => [...cookies].map(([name, value]) => `${name}=${value}`).join('; ')
  const login = await fetch(`${base}login`, {
    method: 'POST',
    headers: { cookie: cookieHeader(), 'x-xsrftoken': xsrf, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _xsrf: xsrf, password }).toString(),
    redirect: 'manual',
  })
  if (login.status >= 400) throw new Error(`POST login answered ${login.status}`)
  remember(login)
  return { cookie: cookieHeader(), 'x-xsrftoken': xsrf }
}

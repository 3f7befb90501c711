import WebSocket from 'ws'

/**
 * Open WebUI's Open Terminal client as it goes on the wire, written from ../shared/spec/open-terminal.md
 * (not copied from Open WebUI, whose backend imports the whole app and whose code may not be committed,
 * spec §6.1): the spec-to-tools conversion (§3.3 convert_openapi_to_tool_payload), the backend's tool calls
 * (§3.3 execute_tool_server: Python urlencode without doseq, the whole argument dict as the body, `{}` for
 * bodyless POST/DELETE), the browser's direct calls (§3.5: String(v) query values, Content-Type json on
 * every request), and the terminal pane's WebSocket (§2.3, §3.4: `?user_id=`, then the auth frame).
 */

type Json = Record<string, any>

export interface Tool { name: string, description: string, method: string, path: string, params: Record<string, { type: string, in: string, required: boolean }> }

/** §3.3: every operation with an operationId is a tool; a parameter's type is `schema.type` or "string". */
export function toolsFromSpec (spec: Json): Tool[] {
  const tools: Tool[] = []
  const resolve = (schema: Json): Json => typeof schema?.$ref === 'string'
    ? resolve(schema.$ref.replace(/^#\//, '').split('/').reduce((node: Json, key: string) => node?.[key], spec))
    : schema
  for (const [path, methods] of Object.entries(spec.paths as Json)) {
    for (const [method, op] of Object.entries(methods as Json)) {
      if (typeof op?.operationId !== 'string') continue
      const params: Tool['params'] = {}
      for (const param of op.parameters ?? []) {
        if (!['query', 'path', 'header'].includes(param.in)) continue
        params[param.name] = { type: resolve(param.schema)?.type ?? 'string', in: param.in, required: param.required === true }
      }
      const body = resolve(op.requestBody?.content?.['application/json']?.schema)
      for (const [name, schema] of Object.entries((body?.properties ?? {}) as Json)) {
        params[name] = { type: resolve(schema)?.type ?? 'string', in: 'body', required: (body.required ?? []).includes(name) }
      }
      tools.push({ name: op.operationId, description: op.description ?? op.summary ?? '', method: method.toUpperCase(), path, params })
    }
  }
  return tools
}

/** Python's str() of a value, as urlencode applies it without doseq: True, 5.0, ['*.py']. */
export function pythonStr (value: unknown, asFloat = false): string {
  if (value === true) return 'True'
  if (value === false) return 'False'
  if (typeof value === 'number') return asFloat && Number.isInteger(value) ? `${value}.0` : String(value)
  if (Array.isArray(value)) return `[${value.map((item) => typeof item === 'string' ? `'${item}'` : pythonStr(item)).join(', ')}]`
  return String(value)
}

export interface CallOptions {
  baseUrl: string
  key: string
  userId?: string
  chatId?: string
  /** numbers the model gives as floats (JSON 5.0 arrives in Python as float) */
  floats?: string[]
}

export interface ToolAnswer { status: number, contentType: string, body: any, text: string }

/** §3.3 execute_tool_server: how Open WebUI's backend calls one tool for the model. */
export async function callToolLikeBackend (tool: Tool, args: Json, options: CallOptions): Promise<ToolAnswer> {
  let path = tool.path
  const query: string[] = []
  for (const [name, param] of Object.entries(tool.params)) {
    const value = args[name]
    if (value === undefined || value === null || (value === '' && !param.required)) continue
    if (param.in === 'path') path = path.replace(`{${name}}`, encodeURIComponent(String(value)))
    // urlencode(quote_via=quote_plus) of str(value)
    else if (param.in === 'query') query.push(`${encodeURIComponent(name)}=${encodeURIComponent(pythonStr(value, options.floats?.includes(name))).replace(/%20/g, '+')}`)
  }
  const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${options.key}` }
  if (options.userId !== undefined) headers['x-user-id'] = options.userId
  if (options.chatId !== undefined) headers['x-session-id'] = options.chatId
  const hasBody = Object.values(tool.params).some((param) => param.in === 'body')
  const init: RequestInit = { method: tool.method, headers }
  if (hasBody) init.body = JSON.stringify(args)
  else if (tool.method !== 'GET') init.body = '{}'
  return await answer(await fetch(`${options.baseUrl}${path}${query.length > 0 ? `?${query.join('&')}` : ''}`, init))
}

/** §3.5 executeToolServer (direct mode): String(v) for every query value, Content-Type json always, no X-User-Id, a DELETE with no body. */
export async function callToolLikeBrowser (tool: Tool, args: Json, options: CallOptions): Promise<ToolAnswer> {
  let path = tool.path
  const query = new URLSearchParams()
  for (const [name, param] of Object.entries(tool.params)) {
    if (!(name in args)) continue
    if (param.in === 'path') path = path.replace(`{${name}}`, encodeURIComponent(String(args[name])))
    else if (param.in === 'query') query.set(name, String(args[name]))
  }
  const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${options.key}` }
  if (options.chatId !== undefined) headers['x-session-id'] = options.chatId
  const init: RequestInit = { method: tool.method, headers }
  if (Object.values(tool.params).some((param) => param.in === 'body')) init.body = JSON.stringify(args)
  const search = query.toString()
  return await answer(await fetch(`${options.baseUrl}${path}${search === '' ? '' : `?${search}`}`, init))
}

async function answer (response: Response): Promise<ToolAnswer> {
  const contentType = response.headers.get('content-type') ?? ''
  const buffer = Buffer.from(await response.arrayBuffer())
  const text = buffer.toString('utf8')
  let body: any = buffer
  if (contentType.startsWith('application/json')) body = JSON.parse(text)
  return { status: response.status, contentType, body, text }
}

/** The terminal pane (§2.3, §3.4): POST /api/terminals through the proxy, then the upstream WebSocket. */
export class PaneClient {
  output = ''
  closeCode: number | null = null
  private constructor (readonly socket: WebSocket, readonly id: string) {
    socket.on('message', (data: Buffer) => { this.output += data.toString('utf8') })
    socket.on('close', (code) => { this.closeCode = code })
  }

  static async open (options: CallOptions & { token?: string, wsUserId?: string, id?: string }): Promise<PaneClient> {
    let id = options.id
    if (id === undefined) {
      const headers: Record<string, string> = { authorization: `Bearer ${options.key}` }
      if (options.userId !== undefined) headers['x-user-id'] = options.userId
      if (options.chatId !== undefined) headers['x-session-id'] = options.chatId
      const created = await fetch(`${options.baseUrl}/api/terminals`, { method: 'POST', headers })
      if (created.status !== 200) throw new Error(`POST /api/terminals answered ${created.status}: ${await created.text()}`)
      id = (await created.json() as { id: string }).id
    }
    const user = options.wsUserId ?? options.userId
    const socket = new WebSocket(`${options.baseUrl.replace(/^http/, 'ws')}/api/terminals/${encodeURIComponent(id)}${user === undefined ? '' : `?user_id=${encodeURIComponent(user)}`}`)
    await new Promise<void>((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
    const pane = new PaneClient(socket, id)
    socket.send(JSON.stringify({ type: 'auth', token: options.token ?? options.key }))
    return pane
  }

  resize (cols: number, rows: number): void { this.socket.send(JSON.stringify({ type: 'resize', cols, rows })) }
  ping (): void { this.socket.send(JSON.stringify({ type: 'ping' })) }
  /** keystrokes as xterm's onData sends them: binary frames (TextEncoder) */
  type (text: string): void { this.socket.send(Buffer.from(text, 'utf8'), { binary: true }) }

  async until (pattern: RegExp, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs
    while (!pattern.test(this.output)) {
      if (this.closeCode !== null) throw new Error(`the pane closed (${this.closeCode}) before ${pattern}: ${JSON.stringify(this.output.slice(-500))}`)
      if (Date.now() > deadline) throw new Error(`no ${pattern} in the pane: ${JSON.stringify(this.output.slice(-500))}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return this.output
  }

  async closed (timeoutMs = 15_000): Promise<number> {
    const deadline = Date.now() + timeoutMs
    while (this.closeCode === null) {
      if (Date.now() > deadline) throw new Error('the pane did not close')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return this.closeCode
  }

  close (): void { this.socket.close() }
}

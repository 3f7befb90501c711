import { createHash } from 'node:crypto'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { z } from 'zod'
import { createApiKeyCheck } from '../../auth/api-key.ts'
import { isUserId, type Identity } from '../../auth/identity.ts'
import type { AuthConfig, ExecutionLimits, TerminalSettings } from '../../config.ts'
import { ApiError, errors } from '../../errors.ts'
import type { Terminals } from '../../terminal/terminals.ts'
import { TerminalError } from '../../terminal/terminal-jail.ts'
import { toApiError } from '../error-boundary.ts'
import { readFromJail, streamFromJail } from './downloads.ts'
import { ptySocketHandler } from './pty-socket.ts'
import { operation, readQuery, toolsDocument } from './tools.ts'

export interface TerminalRouteDeps {
  terminals: Terminals
  settings: TerminalSettings
  auth: AuthConfig
  limits: ExecutionLimits
  maxUploadBytes: number
}

const HOME = '/mnt/data'
/** A read_file of an image comes back as the image, up to this size (Open WebUI makes it model input). */
const MAX_IMAGE_BYTES = 8 * 1024 * 1024
const MAX_TEXT_REPLY_BYTES = 1024 * 1024
/** Content we serve is rendered under Open WebUI's origin: scripts in it must not reach that origin (spec §4.2). */
const SANDBOX_HEADERS = { 'content-security-policy': 'sandbox allow-scripts', 'x-content-type-options': 'nosniff' }

const RunBody = z.object({
  command: z.string().min(1).max(1024 * 1024),
  cwd: z.string().max(4096).nullish(),
  env: z.record(z.string(), z.string()).nullish(),
  timeout: z.number().positive().nullish(),
  wait: z.number().min(0).max(300).nullish(),
})
const PathBody = z.object({ path: z.string().min(1).max(4096) })
const WriteBody = z.object({ path: z.string().min(1).max(4096), content: z.string() })
const ReplaceBody = z.object({
  path: z.string().min(1).max(4096),
  replacements: z.array(z.object({
    target: z.string(), replacement: z.string(), start_line: z.number().int().min(1).nullish(), end_line: z.number().int().min(1).nullish(), allow_multiple: z.boolean().nullish(),
  })).min(1).max(1000),
})
const MoveBody = z.object({ source: z.string().min(1).max(4096), destination: z.string().min(1).max(4096) })
const ArchiveBody = z.object({ paths: z.array(z.string().min(1).max(4096)).min(1).max(1000) })
const InputBody = z.object({ input: z.string() })

function parse<T> (schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body ?? {})
  if (!parsed.success) throw errors.invalidRequest(`Invalid request body: ${parsed.error.issues.map((issue) => `${issue.path.join('.') || 'body'}: ${issue.message}`).join('; ')}.`)
  return parsed.data
}

/** Open Terminal's failures as Warden's `{error, message}`, with Open Terminal's `detail` too (the sidebar reads it). */
function terminalApiError (error: unknown): ApiError {
  if (!(error instanceof TerminalError)) return toApiError(error)
  const make = { 403: errors.permissionDenied, 404: errors.notFound, 409: errors.conflict, 413: errors.payloadTooLarge, 415: errors.unsupportedMediaType, 429: errors.rateLimited, 503: errors.jailUnavailable }[error.status] ?? errors.invalidRequest
  return make(error.detail)
}

declare module 'fastify' {
  interface FastifyRequest {
    terminalOwner: Identity | null
  }
}

/**
 * Open WebUI's Open Terminal API (spec §0.4, §2.1) under `basePath`: the model's tools, the file sidebar and
 * the terminal pane, each in the caller's own terminal jail. Open WebUI's backend holds the key and names
 * the user in X-User-Id (and the chat in X-Session-Id); the user is scoped to the key that named it.
 */
export const terminalRoutes: FastifyPluginAsync<TerminalRouteDeps> = async (app, deps) => {
  const { terminals, settings } = deps
  const isKey = createApiKeyCheck(deps.auth.apiKeys)
  const cwds = new Map<string, string>()
  app.decorateRequest('terminalOwner', null)
  // Open WebUI's browser sends DELETE with Content-Type: application/json and no body (spec §4.2)
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, body === '' ? {} : JSON.parse(body as string))
    } catch {
      done(errors.invalidRequest('The body is not valid JSON.'))
    }
  })
  app.setErrorHandler(async (error, _request, reply) => {
    const api = terminalApiError(error)
    if (api.statusCode >= 500) reply.log.error({ err: error }, 'terminal request failed')
    await reply.code(api.statusCode).send({ error: api.code, message: api.message, detail: api.message, ...api.extra })
  })

  /** Who the request acts for: the key (hashed) is the tenant, X-User-Id the user in it. */
  const ownerOf = (headers: FastifyRequest['headers'], token: string | null, userId: unknown): Identity => {
    let tenant: string
    if (token !== null && isKey(token)) tenant = `terminal-${createHash('sha256').update(token).digest('hex').slice(0, 16)}`
    else if (token === null && deps.auth.methods.includes('none')) tenant = 'terminal'
    else throw errors.unauthorized('Invalid API key')
    const user = typeof userId === 'string' && userId !== '' ? userId : headers['x-user-id']
    if (user === undefined || user === '') return { tenant, user: 'default' }
    if (typeof user !== 'string' || !isUserId(user)) throw errors.invalidRequest('X-User-Id is not a valid user id.')
    return { tenant, user }
  }
  const PUBLIC = new Set(['/api/config', '/openapi.json', '/health'])
  app.addHook('onRequest', async (request) => {
    const local = (request.url.split('?')[0] ?? '').slice(settings.basePath.length)
    if (PUBLIC.has(local) || (request.headers.upgrade ?? '').toLowerCase() === 'websocket') return
    const token = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? '')?.[1] ?? null
    request.terminalOwner = ownerOf(request.headers, token, undefined)
  })
  const owner = (request: FastifyRequest): Identity => {
    if (request.terminalOwner === null) throw errors.unauthorized('Invalid API key')
    return request.terminalOwner
  }
  const chatOf = (request: FastifyRequest): string | null => {
    const chat = request.headers['x-session-id']
    return typeof chat === 'string' && chat !== '' ? chat.slice(0, 200) : null
  }
  const cwdKey = (request: FastifyRequest) => JSON.stringify([terminals.routingId(owner(request), chatOf(request)), chatOf(request)])
  const cwdOf = (request: FastifyRequest) => cwds.get(cwdKey(request)) ?? HOME
  const jailOf = async (request: FastifyRequest) => await terminals.jailFor(owner(request), chatOf(request))
  const files = async (request: FastifyRequest, op: string, args: Record<string, unknown>) => {
    const { jail } = await jailOf(request)
    const result = await jail.request(op, { cwd: cwdOf(request), ...args })
    if (['write', 'replace', 'mkdir', 'delete', 'move'].includes(op)) jail.checkpoint().catch(() => {})
    return result
  }
  const query = (request: FastifyRequest, operationId: string) => readQuery(operation(operationId).query, request.query as Record<string, unknown>)
  const seconds = (value: unknown) => typeof value === 'number' ? value * 1000 : undefined

  // --- discovery (spec §4.1 A) --------------------------------------------------------------------------
  app.get('/health', async () => ({ status: 'ok' }))
  app.get('/api/config', async () => ({ features: { terminal: true, notebooks: false, system: true } }))
  app.get('/openapi.json', async () => toolsDocument('Warden terminal'))
  app.get('/system', async () => ({ prompt: systemPrompt(deps) }))
  app.get('/files/cwd', async (request) => ({ cwd: cwdOf(request), home: HOME, root: { path: HOME, label: 'Home' } }))
  app.post('/files/cwd', async (request) => {
    const { path } = parse(PathBody, request.body)
    const result = await files(request, 'is_directory', { path }) as { cwd: string }
    cwds.set(cwdKey(request), result.cwd)
    return { cwd: result.cwd }
  })

  // --- the model's tools (spec §2.1, §2.2) ----------------------------------------------------------------
  app.post('/execute', async (request) => {
    const body = parse(RunBody, request.body)
    const { wait, tail } = query(request, 'run_command')
    const { commands } = await jailOf(request)
    const timeoutMs = Math.min(seconds(body.timeout) ?? settings.commandTimeoutMs, settings.maxCommandTimeoutMs)
    return await commands.run({
      command: body.command,
      cwd: body.cwd ?? cwdOf(request),
      env: body.env ?? {},
      waitMs: seconds(wait) ?? seconds(body.wait) ?? settings.defaultWaitMs,
      timeoutMs,
      tail: tail as number | undefined,
    })
  })
  app.get('/execute', async (request) => await (await jailOf(request)).commands.list())
  app.get<{ Params: { id: string } }>('/execute/:id/status', async (request) => {
    const { wait, offset, tail } = query(request, 'get_process_status')
    return await (await jailOf(request)).commands.status(request.params.id, { waitMs: seconds(wait) ?? 0, offset: (offset as number | undefined) ?? 0, tail: tail as number | undefined })
  })
  app.post<{ Params: { id: string } }>('/execute/:id/input', async (request) => {
    await (await jailOf(request)).commands.input(request.params.id, parse(InputBody, request.body).input)
    return { status: 'ok' }
  })
  app.delete<{ Params: { id: string } }>('/execute/:id', async (request) => {
    const { force } = query(request, 'kill_process')
    await (await jailOf(request)).commands.kill(request.params.id, force === true)
    return { status: 'killed' }
  })
  app.get('/files/list', async (request) => await files(request, 'list_dir', query(request, 'list_files')))
  app.get('/files/display', async (request) => await files(request, 'display', query(request, 'display_file')))
  app.get('/files/read', async (request, reply) => {
    const args = query(request, 'read_file')
    const stat = await files(request, 'stat', { path: args.path }) as { mime: string, type: string, path: string }
    if (stat.type === 'file' && stat.mime.startsWith('image/')) {
      const image = await readFromJail((await jailOf(request)).jail, stat.path, cwdOf(request), MAX_IMAGE_BYTES)
      if (image === null) throw errors.payloadTooLarge(`The image is larger than ${MAX_IMAGE_BYTES} bytes.`)
      return await reply.type(image.info.mime).headers(SANDBOX_HEADERS).send(image.bytes)
    }
    return await files(request, 'read_text', { ...args, max_bytes: MAX_TEXT_REPLY_BYTES })
  })
  app.post('/files/write', async (request) => await files(request, 'write', parse(WriteBody, request.body)))
  app.post('/files/replace', async (request) => await files(request, 'replace', parse(ReplaceBody, request.body)))
  app.get('/files/grep', async (request) => await files(request, 'grep', query(request, 'grep_search')))
  app.get('/files/glob', async (request) => await files(request, 'glob', query(request, 'glob_search')))

  // --- the file sidebar (spec §3.5) -----------------------------------------------------------------------
  const serve = async (request: FastifyRequest, reply: FastifyReply, path: string) => {
    const { info, body } = await streamFromJail((await jailOf(request)).jail, 'download', { path, cwd: cwdOf(request) })
    return await reply.type(info.mime).headers({ ...SANDBOX_HEADERS, 'content-length': String(info.size) }).send(body)
  }
  app.get('/files/view', async (request, reply) => await serve(request, reply, String(readQuery([{ name: 'path', type: 'string', description: '', required: true }], request.query as Record<string, unknown>).path)))
  app.get<{ Params: { '*': string } }>('/files/serve/*', async (request, reply) => await serve(request, reply, `/${request.params['*']}`))
  app.post('/files/mkdir', async (request) => await files(request, 'mkdir', parse(PathBody, request.body)))
  app.delete('/files/delete', async (request) => await files(request, 'delete', readQuery([{ name: 'path', type: 'string', description: '', required: true }], request.query as Record<string, unknown>)))
  app.post('/files/move', async (request) => await files(request, 'move', parse(MoveBody, request.body)))
  app.post('/files/archive', async (request, reply) => {
    const { paths } = parse(ArchiveBody, request.body)
    const { info, body } = await streamFromJail((await jailOf(request)).jail, 'archive', { paths, cwd: cwdOf(request) })
    return await reply.type('application/zip').headers({ 'content-disposition': `attachment; filename="${info.name.replace(/["\\\r\n]/g, '_')}"`, 'content-length': String(info.size) }).send(body)
  })
  app.post('/files/upload', async (request) => {
    const { directory } = readQuery([{ name: 'directory', type: 'string', description: '', default: '.' }], request.query as Record<string, unknown>)
    const part = await request.file({ limits: { fileSize: deps.maxUploadBytes } })
    if (part === undefined || part.fieldname !== 'file') throw errors.invalidRequest('Send the file in the multipart field "file".')
    const { jail } = await jailOf(request)
    const channel = jail.openChannel({ onBytes: () => {}, onEof: () => {} })
    const answer = jail.request<{ path: string, size: number }>('upload', { channel, directory, filename: part.filename, cwd: cwdOf(request) })
    answer.catch(() => {})
    let size = 0
    try {
      for await (const chunk of part.file) {
        size += (chunk as Buffer).length
        await jail.write(channel, chunk as Buffer)
      }
      if (part.file.truncated) throw errors.payloadTooLarge(`The upload is larger than ${deps.maxUploadBytes} bytes.`)
      const ended = jail.request('upload_end', { channel, size })
      const result = await answer
      await ended
      jail.checkpoint().catch(() => {})
      return result
    } finally {
      jail.closeChannel(channel)
    }
  })
  app.get('/ports', async () => ({ ports: [] }))

  // --- the terminal pane (spec §2.3) ----------------------------------------------------------------------
  const ptyModel = (pty: { id: string, createdAt: Date, pid: number }) => ({ id: pty.id, created_at: pty.createdAt.toISOString(), pid: pty.pid })
  app.post('/api/terminals', async (request) => ptyModel(await terminals.openPty(owner(request), chatOf(request))))
  app.get('/api/terminals', async (request) => terminals.ptysOf(owner(request)).map(ptyModel))
  app.route<{ Params: { id: string } }>({
    method: 'GET',
    url: '/api/terminals/:id',
    handler: async (request, reply) => {
      const pty = terminals.pty(request.params.id, owner(request))
      return pty === null ? await reply.code(404).send({ error: 'Session not found', message: 'Session not found', detail: 'Session not found' }) : ptyModel(pty)
    },
    wsHandler: ptySocketHandler({ terminals, ownerOf: (token, userId) => ownerOf({}, token, userId) }),
  })
  app.delete<{ Params: { id: string } }>('/api/terminals/:id', async (request, reply) => {
    const pty = terminals.pty(request.params.id, owner(request))
    if (pty === null) return await reply.code(404).send({ error: 'Session not found', message: 'Session not found', detail: 'Session not found' })
    pty.close()
    return { status: 'deleted' }
  })
}

function systemPrompt (deps: TerminalRouteDeps): string {
  const { limits, settings } = deps
  return [
    'You have a Linux terminal of your own (bash), in a sandbox that only you use.',
    `Your home directory is ${HOME}; files there persist between chats${settings.perChat ? ' of this chat' : ''}. /tmp is private and temporary.`,
    'There is no network access: package installs from the internet fail.',
    `Each command is stopped after ${Math.round(settings.commandTimeoutMs / 1000)} s unless you pass a shorter timeout; memory is limited to ${Math.round(limits.memoryBytes / 1048576)} MiB.`,
    'Run commands with run_command; if the answer says running, poll get_process_status with offset=next_offset.',
  ].join('\n')
}

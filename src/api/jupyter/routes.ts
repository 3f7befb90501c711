import cookie from '@fastify/cookie'
import formbody from '@fastify/formbody'
import websocket from '@fastify/websocket'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { Identity } from '../../auth/identity.ts'
import { JupyterAuth, newXsrfToken, type JupyterCredentials } from '../../auth/jupyter-auth.ts'
import { errors } from '../../errors.ts'
import type { Kernel, KernelManager } from '../../live/kernels.ts'
import type { Metrics } from '../../metrics.ts'
import { openChannels } from './channels.ts'
import { V1_SUBPROTOCOL } from './messages.ts'

export interface JupyterRouteDeps {
  kernels: KernelManager
  auth: JupyterAuth
  metrics: Metrics
  /** where the API lives besides the root, e.g. /jupyter (Open WebUI ≥ 0.6.8 can use a prefix) */
  basePath: string
}

declare module 'fastify' {
  interface FastifyRequest {
    jupyterIdentity: Identity | null
  }
}

const SESSION_COOKIE = 'warden-jupyter'
const KERNEL_NAME = 'python3'
/** The largest WebSocket message a client may send: an execute_request carries the cell's code. */
const MAX_CLIENT_MESSAGE_BYTES = 8 * 1024 * 1024

/** The kernel as the Jupyter Server REST API describes one (../shared/spec/openwebui-jupyter.md §6.1). */
export function kernelModel (kernel: Kernel) {
  return {
    id: kernel.id,
    name: KERNEL_NAME,
    last_activity: kernel.lastActivity.toISOString(),
    execution_state: kernel.state,
    connections: kernel.connections,
  }
}

/** Paths the Jupyter API serves at the root and under `basePath`; they have their own authentication. */
export function isJupyterPath (path: string, basePath: string): boolean {
  const local = basePath !== '' && (path === basePath || path.startsWith(`${basePath}/`)) ? path.slice(basePath.length) : path
  return local === '/api' || local.startsWith('/api/') || local === '/login'
}

function credentialsOf (request: FastifyRequest): JupyterCredentials {
  const query = request.query as Record<string, unknown>
  const header = /^(?:token|Bearer)\s+(\S+)$/i.exec(request.headers.authorization ?? '')?.[1]
  const apiKey = request.headers['x-api-key']
  const token = typeof query.token === 'string' && query.token !== '' ? query.token : header ?? (typeof apiKey === 'string' ? apiKey : null)
  const xsrfHeader = request.headers['x-xsrftoken']
  return {
    token,
    session: request.cookies[SESSION_COOKIE] ?? null,
    xsrfCookie: request.cookies._xsrf ?? null,
    xsrfHeader: typeof xsrfHeader === 'string' ? xsrfHeader : null,
    isSafeMethod: request.method === 'GET' || request.method === 'HEAD',
  }
}

function identityOf (request: FastifyRequest): Identity {
  if (request.jupyterIdentity === null) throw errors.unauthorized('Authentication is required.')
  return request.jupyterIdentity
}

/**
 * @fastify/websocket, registered once at the root for every WebSocket route (Jupyter's channels, the
 * terminal pane): a second registration would add a second upgrade listener that routes each upgrade again.
 */
export const webSockets = [websocket, {
  options: {
    maxPayload: MAX_CLIENT_MESSAGE_BYTES,
    // the binary v1 framing when offered (@jupyterlab/services), else no subprotocol: legacy JSON (Open WebUI, the terminal pane)
    handleProtocols: (protocols: Set<string>) => protocols.has(V1_SUBPROTOCOL) ? V1_SUBPROTOCOL : false,
  },
}] as const

/**
 * The Jupyter Server subset Open WebUI and @jupyterlab/services use: kernels over REST, their channels
 * over a WebSocket, and the login Open WebUI's password mode needs. Every kernel is a live jailed worker.
 */
export const jupyterRoutes: FastifyPluginAsync<JupyterRouteDeps> = async (app, deps) => {
  const { kernels, auth } = deps
  await app.register(cookie)
  await app.register(formbody)
  // Open WebUI posts an empty body as application/octet-stream; @jupyterlab/services sends JSON
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = String(body).trim()
    if (text === '') { done(null, {}); return }
    try {
      done(null, JSON.parse(text))
    } catch {
      done(errors.invalidRequest('The body is not valid JSON.'), undefined)
    }
  })
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))))
  })
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, _body, done) => { done(null, {}) })

  app.decorateRequest('jupyterIdentity', null)
  app.addHook('onRequest', async (request) => {
    if (request.url.split('?')[0]?.endsWith('/login') === true) return
    const result = auth.authenticate(credentialsOf(request))
    if (!result.ok) throw errors.unauthorized(result.reason)
    request.jupyterIdentity = result.identity
  })

  for (const prefix of deps.basePath === '' ? [''] : ['', deps.basePath]) {
    app.get(`${prefix}/api`, async () => ({ version: '2.14.0' }))
    app.get(`${prefix}/api/kernelspecs`, async () => ({
      default: KERNEL_NAME,
      kernelspecs: {
        [KERNEL_NAME]: {
          name: KERNEL_NAME,
          spec: { argv: [], display_name: 'Python 3 (Warden, jailed)', language: 'python', interrupt_mode: 'signal', env: {}, metadata: {} },
          resources: {},
        },
      },
    }))
    app.get(`${prefix}/api/sessions`, async () => [])
    app.get(`${prefix}/api/kernels`, async (request) => kernels.list(identityOf(request)).map(kernelModel))
    app.post(`${prefix}/api/kernels`, async (request, reply) => {
      const kernel = kernels.create(identityOf(request))
      deps.metrics.recordKernel('created')
      return await reply.code(201).header('location', `${prefix}/api/kernels/${kernel.id}`).send(kernelModel(kernel))
    })
    app.get(`${prefix}/api/kernels/:id`, async (request) => kernelModel(ownKernel(kernels, request)))
    app.delete(`${prefix}/api/kernels/:id`, async (request, reply) => {
      if (!kernels.delete((request.params as { id: string }).id, identityOf(request))) throw kernelNotFound(request)
      deps.metrics.recordKernel('deleted')
      return await reply.code(204).send()
    })
    app.post(`${prefix}/api/kernels/:id/interrupt`, async (request, reply) => {
      ownKernel(kernels, request).interrupt()
      return await reply.code(204).send()
    })
    app.post(`${prefix}/api/kernels/:id/restart`, async (request) => {
      const kernel = ownKernel(kernels, request)
      await kernel.restart()
      return kernelModel(kernel)
    })
    app.get(`${prefix}/api/kernels/:id/channels`, {
      websocket: true,
      // the kernel must exist for this caller before the upgrade: a stranger gets a plain 404
      preValidation: async (request) => { ownKernel(kernels, request) },
    }, (socket, request) => {
      openChannels(socket, ownKernel(kernels, request), kernels, identityOf(request), deps.metrics)
    })
    app.get(`${prefix}/login`, async (_request, reply) => loginPage(reply, prefix, auth))
    app.post(`${prefix}/login`, async (request, reply) => login(request, reply, prefix, auth))
  }
}

function kernelNotFound (request: FastifyRequest) {
  return errors.notFound(`Kernel does not exist: ${(request.params as { id: string }).id}`)
}

/** The caller's kernel; another owner's kernel is "not found", exactly like an unknown id. */
function ownKernel (kernels: KernelManager, request: FastifyRequest): Kernel {
  const kernel = kernels.get((request.params as { id: string }).id, identityOf(request))
  if (kernel === null) throw kernelNotFound(request)
  return kernel
}

/** GET login: sets the `_xsrf` cookie Open WebUI's password mode reads (a KeyError without it). */
async function loginPage (reply: FastifyReply, prefix: string, auth: JupyterAuth): Promise<FastifyReply> {
  if (!auth.passwordEnabled) throw errors.notFound('Password login is not enabled (set JUPYTER_PASSWORD).')
  const xsrf = newXsrfToken()
  reply.setCookie('_xsrf', xsrf, { path: '/', sameSite: 'lax' })
  return await reply.type('text/html').send(`<!doctype html><form method="post" action="${prefix}/login"><input type="hidden" name="_xsrf" value="${xsrf}"><input type="password" name="password"><button>Log in</button></form>`)
}

/** POST login: `_xsrf` in the form must equal the cookie; the right password gets a session cookie. */
async function login (request: FastifyRequest, reply: FastifyReply, prefix: string, auth: JupyterAuth): Promise<FastifyReply> {
  if (!auth.passwordEnabled) throw errors.notFound('Password login is not enabled (set JUPYTER_PASSWORD).')
  const form = (request.body ?? {}) as Record<string, unknown>
  const xsrf = request.cookies._xsrf
  if (xsrf === undefined || form._xsrf !== xsrf) throw errors.unauthorized('The _xsrf form field does not match its cookie.')
  const session = auth.login(typeof form.password === 'string' ? form.password : '')
  if (session === null) throw errors.unauthorized('Wrong password.')
  reply.setCookie(SESSION_COOKIE, session, { path: '/', httpOnly: true, sameSite: 'lax' })
  return await reply.code(302).header('location', `${prefix}/`).send()
}

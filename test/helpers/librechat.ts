import { Readable } from 'node:stream'
import * as agents from '@librechat/agents'
import axios from 'axios'
import FormData from 'form-data'
import type { RunningServer } from './server.ts'

/**
 * LibreChat, reproduced without an LLM (spec §13): the agents SDK's real tools, invoked the way its
 * ToolNode invokes them, and LibreChat's own host requests (upload, freshness probe, download) rebuilt
 * with axios + form-data field for field from the captures in spec §13.4.
 */

// The SDK sends through PROXY unless NO_PROXY matches (spec §2.1), and axios honours HTTP(S)_PROXY:
// test traffic to 127.0.0.1 must go straight to the server. Both read the variables per request, so
// clearing them after the SDK's import-time dotenv.config() is soon enough.
for (const name of ['PROXY', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy']) {
  delete process.env[name]
}
process.env.NO_PROXY = '127.0.0.1,localhost'

/** A LibreChat user id: a 24-hex Mongo ObjectId (spec §5). */
export const USER_ID = '6650c0ffee0123456789abcd'

/** LibreChat's upload cap (spec §3.4). */
const MAX_FILE_BYTES = 150 * 1024 * 1024

export type CodeEnvKind = 'user' | 'agent' | 'skill'

/** A file reference as the tools send it in `files[]` (spec §3.1.1). */
export interface CodeEnvFile {
  id: string
  resource_id: string
  name: string
  storage_session_id: string
  kind: CodeEnvKind
  version?: number
}

/** A LangChain ToolCall (`type: 'tool_call'`), see `call`. */
export interface ToolCall {
  type: 'tool_call'
  id: string
  name: string
  args: Record<string, unknown>
  [injected: string]: unknown
}

/** The part of a LangChain tool these tests use. */
export interface CodeTool {
  name: string
  invoke (input: ToolCall): Promise<unknown>
}

interface CodeToolParams {
  baseUrl: string
  authHeaders: Record<string, string>
  user_id: string
  /** LibreChat's stateful agents: `stateful` plus statefulSessions and a hint (spec §9) */
  executionProfile?: 'default' | 'stateful'
  statefulSessions?: boolean
  runtimeSessionHint?: string
}

/**
 * The SDK functions used here, typed by hand: the SDK's own .d.ts files import with extensionless
 * and `@/…` paths that `moduleResolution: NodeNext` cannot follow, so TypeScript sees none of their
 * exports. Signatures from agents src/tools/CodeExecutor.ts, BashExecutor.ts, ProgrammaticToolCalling.ts.
 */
interface AgentsSdk {
  createCodeExecutionTool (params: CodeToolParams): CodeTool
  createBashExecutionTool (params: CodeToolParams): CodeTool
  fetchSessionFiles (baseUrl: string, sessionId: string, scope: { kind: CodeEnvKind, id: string, version?: number },
    authHeaders: Record<string, string>): Promise<CodeEnvFile[]>
  createProgrammaticToolCallingTool (params: { baseUrl: string, authHeaders: Record<string, string>, maxRoundTrips?: number }): ProgrammaticTool
  createBashProgrammaticToolCallingTool (params: { baseUrl: string, authHeaders: Record<string, string>, maxRoundTrips?: number }): ProgrammaticTool
}

/** The SDK's programmatic tools (`run_tools_with_code`, `run_tools_with_bash`): invoked with an abort signal too. */
export interface ProgrammaticTool extends CodeTool {
  invoke (input: ToolCall, config?: { signal?: AbortSignal }): Promise<unknown>
}

// imported as ESM, as the SDK's `import` condition resolves: dist/esm/main.mjs (node-fetch@2 underneath)
const sdk = agents as unknown as AgentsSdk

/** The SDK's `fetchSessionFiles` (GET /files/:sid?detail=full, spec §3.8). */
export const fetchSessionFiles = sdk.fetchSessionFiles

/** A file as the server lists it in a tool result's artifact. */
export interface ArtifactFile {
  id: string
  name: string
  storage_session_id?: string
  path?: string
  resource_id?: string
  kind?: CodeEnvKind
  inherited?: boolean
}

export interface CodeArtifact {
  session_id: string
  files?: ArtifactFile[]
  deleted_files?: string[]
  runtime_session_id?: string
  runtime_status?: 'new' | 'reused'
}

/** What a tool call returns: LangChain's ToolMessage, narrowed to what LibreChat reads. */
export interface ToolResult {
  content: string
  artifact: CodeArtifact
}

function toolParams (server: RunningServer, userId: string): CodeToolParams {
  return { baseUrl: server.apiUrl, authHeaders: { 'X-API-Key': server.apiKey }, user_id: userId }
}

/** `execute_code` as LibreChat builds it for a user (API-key deployment). */
export function codeTool (server: RunningServer, userId = USER_ID): CodeTool {
  return sdk.createCodeExecutionTool(toolParams(server, userId))
}

/** The tools of a LibreChat agent configured for the stateful profile, with its runtime session hint. */
export function statefulTools (server: RunningServer, userId: string, hint: string): { code: CodeTool, bash: CodeTool } {
  const params = { ...toolParams(server, userId), executionProfile: 'stateful' as const, statefulSessions: true, runtimeSessionHint: hint }
  return { code: sdk.createCodeExecutionTool(params), bash: sdk.createBashExecutionTool(params) }
}

/** `bash_tool` without an attached workspace, i.e. plain `/exec` with `lang: bash`. */
export function bashTool (server: RunningServer, userId = USER_ID): CodeTool {
  return sdk.createBashExecutionTool(toolParams(server, userId))
}

/** `run_tools_with_code` and `run_tools_with_bash` as LibreChat builds them for an agent. */
export function programmaticTools (server: RunningServer, authHeaders: Record<string, string> = { 'X-API-Key': server.apiKey }): { python: ProgrammaticTool, bash: ProgrammaticTool } {
  const params = { baseUrl: server.apiUrl, authHeaders }
  return { python: sdk.createProgrammaticToolCallingTool(params), bash: sdk.createBashProgrammaticToolCallingTool(params) }
}

/** A tool of the agent the program may call: what ToolNode injects as `toolMap` (the tool) and `toolDefs`. */
export interface AgentTool {
  name: string
  description: string
  parameters: Record<string, unknown>
  invoke (input: unknown, config?: unknown): Promise<unknown>
}

/**
 * Run a programmatic tool as ToolNode does: the agent's tools injected as `toolMap` and `toolDefs`
 * (marked callable from code), so the SDK drives every round against the server by itself.
 */
export async function invokeProgrammatic (tool: ProgrammaticTool, code: string, tools: AgentTool[], options: { timeout?: number, signal?: AbortSignal, extra?: Record<string, unknown> } = {}): Promise<ToolResult> {
  const toolDefs = tools.map((agentTool) => ({ name: agentTool.name, description: agentTool.description, parameters: agentTool.parameters, allowed_callers: ['code_execution'] }))
  const input = call(tool.name, { code, ...(options.timeout === undefined ? {} : { timeout: options.timeout }) },
    { toolMap: new Map(tools.map((agentTool) => [agentTool.name, agentTool])), toolDefs, ...options.extra })
  const message = await tool.invoke(input, options.signal === undefined ? undefined : { signal: options.signal }) as { content: unknown, artifact: unknown }
  if (typeof message.content !== 'string') throw new Error(`tool content is not a string: ${JSON.stringify(message.content)}`)
  return { content: message.content, artifact: message.artifact as CodeArtifact }
}

let callCount = 0

/**
 * A LangChain ToolCall. Invoking a tool with it makes LangChain hand the whole object to the tool as
 * `config.toolCall`, which is how ToolNode injects `session_id` and `_injected_files` (spec §13.2).
 */
export function call (name: string, args: Record<string, unknown>, extra: Record<string, unknown> = {}): ToolCall {
  callCount++
  return { type: 'tool_call', id: `call_${callCount}`, name, args, ...extra }
}

/**
 * Invoke a tool with a ToolCall, `extra` being what ToolNode injects (`session_id`, `_injected_files`).
 * A ToolMessage with `content` and `artifact` comes back; an API failure throws CodeApiRequestError.
 */
export async function invoke (tool: CodeTool, args: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<ToolResult> {
  const message = await tool.invoke(call(tool.name, args, extra)) as { content: unknown, artifact: unknown }
  if (typeof message.content !== 'string') throw new Error(`tool content is not a string: ${JSON.stringify(message.content)}`)
  return { content: message.content, artifact: message.artifact as CodeArtifact }
}

/**
 * ToolNode's `toInjectedFileRef` (spec §5): how files tracked from earlier calls (or primed uploads)
 * are passed to the next code-tool call as `_injected_files`.
 */
export function toInjectedFileRef (file: ArtifactFile & { version?: number }, execSessionId: string): CodeEnvFile {
  const base = {
    id: file.id,
    resource_id: file.resource_id ?? file.id,
    name: file.name,
    storage_session_id: file.storage_session_id ?? execSessionId,
  }
  const kind = file.kind ?? 'user'
  if (kind === 'skill' && file.version != null) return { ...base, kind: 'skill', version: file.version }
  if (kind === 'agent') return { ...base, kind: 'agent' }
  return { ...base, kind: 'user' }
}

/** The `codeEnvRef` LibreChat keeps for an uploaded file (spec §3.4). */
export interface CodeEnvRef {
  kind: CodeEnvKind
  /** the resource id: user id, agent id or skill id */
  id: string
  version?: number
  storage_session_id: string
  file_id: string
  filename: string
}

export interface LibreChatUpload {
  kind: CodeEnvKind
  id: string
  version?: number
  filename: string
  bytes: Uint8Array | string
  contentType?: string
  userId?: string
}

/** LibreChat sends nested names through form-data's `filepath` only when they are this tame (spec §3.4). */
function isSafeNestedName (filename: string): boolean {
  return filename.includes('/') && /^[a-zA-Z0-9._\-/]+$/.test(filename) &&
    filename.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..')
}

/**
 * LibreChat's `uploadCodeEnvFile`: multipart fields `kind`, `id`, (`version`), then `file`, sent chunked
 * (the file is a stream of unknown length) with `User-Agent`, `User-Id` and the API key.
 */
export async function uploadAsLibreChat (server: RunningServer, upload: LibreChatUpload): Promise<CodeEnvRef> {
  const form = new FormData()
  form.append('kind', upload.kind)
  form.append('id', upload.id)
  if (upload.kind === 'skill' && upload.version !== undefined) form.append('version', String(upload.version))
  const basename = upload.filename.slice(upload.filename.lastIndexOf('/') + 1)
  const stream = Readable.from([Buffer.from(upload.bytes)])
  form.append('file', stream, {
    filename: basename,
    ...(isSafeNestedName(upload.filename) ? { filepath: upload.filename } : {}),
    ...(upload.contentType === undefined ? {} : { contentType: upload.contentType }),
  })
  const response = await axios.post(`${server.apiUrl}/upload`, form, {
    headers: {
      ...form.getHeaders(),
      'Content-Type': 'multipart/form-data',
      'User-Agent': 'LibreChat/1.0',
      'User-Id': upload.userId ?? USER_ID,
      'X-API-Key': server.apiKey,
    },
    maxContentLength: MAX_FILE_BYTES,
    maxBodyLength: MAX_FILE_BYTES,
    timeout: 120_000,
    proxy: false,
  })
  const result = response.data as { message?: string, storage_session_id?: string, files?: Array<{ fileId: string, filename: string }> }
  const file = result.files?.[0]
  if (result.message !== 'success' || result.storage_session_id === undefined || file === undefined) {
    throw new Error(`Error uploading file: ${JSON.stringify(result)}`)
  }
  return {
    kind: upload.kind,
    id: upload.id,
    ...(upload.version === undefined ? {} : { version: upload.version }),
    storage_session_id: result.storage_session_id,
    file_id: file.fileId,
    filename: file.filename,
  }
}

/** How LibreChat's priming passes an uploaded file to a tool: ToolNode's ref built from the codeEnvRef. */
export function injectedFromUpload (ref: CodeEnvRef): CodeEnvFile {
  return { id: ref.file_id, resource_id: ref.id, name: ref.filename, storage_session_id: ref.storage_session_id, kind: ref.kind }
}

/** `buildCodeEnvDownloadQuery`: `?kind=…&id=…[&version=…]` (spec §3.6). */
function scopeQuery (ref: Pick<CodeEnvRef, 'kind' | 'id' | 'version'>) {
  return { kind: ref.kind, id: ref.id, ...(ref.version === undefined ? {} : { version: String(ref.version) }) }
}

function hostHeaders (server: RunningServer) {
  return { 'User-Agent': 'LibreChat/1.0', 'X-API-Key': server.apiKey, 'X-CodeAPI-Expected-Profile': 'default' }
}

export interface ObjectInfo {
  name?: string
  originalFilename?: string
  size?: number
  contentType?: string
  lastModified?: string
  etag?: string
}

/**
 * LibreChat's freshness probe (`getCodeFileInfo`, spec §3.7): GET …/sessions/:sid/objects/:fid?kind&id,
 * 5 s timeout. LibreChat treats any failure as "re-upload"; the status is returned so a test can tell.
 */
export async function probeAsLibreChat (server: RunningServer, ref: Pick<CodeEnvRef, 'kind' | 'id' | 'version' | 'storage_session_id' | 'file_id'>): Promise<{ status: number, info: ObjectInfo }> {
  const response = await axios.get(`${server.apiUrl}/sessions/${ref.storage_session_id}/objects/${ref.file_id}`, {
    params: scopeQuery(ref),
    headers: hostHeaders(server),
    timeout: 5000,
    proxy: false,
    validateStatus: () => true,
  })
  return { status: response.status, info: response.data as ObjectInfo }
}

export interface Downloaded {
  status: number
  bytes: Buffer
  headers: Record<string, string>
}

/**
 * LibreChat's download of a generated file (`downloadCodeOutputBuffer`, spec §3.6): axios arraybuffer,
 * 15 s timeout, from `storage_session_id ?? artifact.session_id` with `?kind=user&id=<user>`.
 */
export async function downloadAsLibreChat (server: RunningServer, storageSessionId: string, fileId: string, scope: Pick<CodeEnvRef, 'kind' | 'id' | 'version'> = { kind: 'user', id: USER_ID }): Promise<Downloaded> {
  const response = await axios.get(`${server.apiUrl}/download/${storageSessionId}/${fileId}`, {
    params: scopeQuery(scope),
    headers: hostHeaders(server),
    responseType: 'arraybuffer',
    timeout: 15_000,
    maxContentLength: MAX_FILE_BYTES,
    proxy: false,
    validateStatus: () => true,
  })
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(response.headers)) headers[name] = String(value)
  return { status: response.status, bytes: Buffer.from(response.data as ArrayBuffer), headers }
}

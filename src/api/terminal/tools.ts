import { errors } from '../../errors.ts'

/**
 * The operations Open WebUI turns into model tools (spec §3.3: one tool per operationId, named after
 * it; parameters from the query and the JSON body). One table is the source of the served OpenAPI
 * document and of how each query parameter is read (spec §4.2: Python-style values), so they agree.
 */
export type ParamType = 'string' | 'integer' | 'number' | 'boolean' | 'array'

export interface Param { name: string, type: ParamType, description: string, required?: boolean, default?: unknown, minimum?: number, maximum?: number }

export interface ToolOperation {
  operationId: string
  method: 'get' | 'post' | 'delete'
  /** OpenAPI path, `{id}` style */
  path: string
  description: string
  query?: Param[]
  pathParams?: Param[]
  body?: { properties: Record<string, Record<string, unknown>>, required: string[] }
}

const path = (name: string, description: string, fallback?: string): Param => ({ name, type: 'string', description, ...(fallback === undefined ? { required: true } : { default: fallback }) })
const procId: Param = { name: 'process_id', type: 'string', description: 'The id run_command returned.', required: true }

export const TOOL_OPERATIONS: ToolOperation[] = [
  {
    operationId: 'run_command',
    method: 'post',
    path: '/execute',
    description: 'Run a shell command (bash) in your own sandboxed Linux terminal. stdout and stderr are merged. The call waits up to `wait` seconds; if the command is still running, poll get_process_status with offset=next_offset. The command is stopped after `timeout` seconds. There is no network access. Your home directory /mnt/data persists.',
    query: [
      { name: 'wait', type: 'number', description: 'Seconds to wait for the command to finish before answering (0-300).', minimum: 0, maximum: 300 },
      { name: 'tail', type: 'integer', description: 'Return only the last N output entries.', minimum: 1 },
    ],
    body: {
      properties: {
        command: { type: 'string', description: 'The shell command to run.' },
        cwd: { type: 'string', description: 'Working directory (default: the home directory).' },
        env: { type: 'object', additionalProperties: { type: 'string' }, description: 'Extra environment variables.' },
        timeout: { type: 'number', description: 'Seconds after which the command and everything it started are killed.' },
      },
      required: ['command'],
    },
  },
  {
    operationId: 'get_process_status',
    method: 'get',
    path: '/execute/{process_id}/status',
    description: 'Status and new output of a command started by run_command. Pass offset=next_offset from the previous answer to get only new output.',
    pathParams: [procId],
    query: [
      { name: 'wait', type: 'number', description: 'Seconds to wait for the command to finish (0-300).', minimum: 0, maximum: 300 },
      { name: 'offset', type: 'integer', description: 'Output entries to skip (next_offset of the previous answer).', minimum: 0 },
      { name: 'tail', type: 'integer', description: 'Return only the last N output entries.', minimum: 1 },
    ],
  },
  { operationId: 'list_processes', method: 'get', path: '/execute', description: 'List the commands started in this terminal and their status.' },
  {
    operationId: 'send_process_input',
    method: 'post',
    path: '/execute/{process_id}/input',
    description: 'Send input to a running command (escapes such as \\n and \\x03 are decoded).',
    pathParams: [procId],
    body: { properties: { input: { type: 'string', description: 'The text to send.' } }, required: ['input'] },
  },
  {
    operationId: 'kill_process',
    method: 'delete',
    path: '/execute/{process_id}',
    description: 'Stop a running command: SIGTERM to its process group, or SIGKILL with force=true.',
    pathParams: [procId],
    query: [{ name: 'force', type: 'boolean', description: 'SIGKILL instead of SIGTERM.', default: false }],
  },
  {
    operationId: 'list_files',
    method: 'get',
    path: '/files/list',
    description: 'List a directory.',
    query: [path('directory', 'The directory to list.', '.')],
  },
  {
    operationId: 'read_file',
    method: 'get',
    path: '/files/read',
    description: 'Read a text file, optionally a range of lines (1-based, inclusive). Images come back as images.',
    query: [
      path('path', 'The file to read.'),
      { name: 'start_line', type: 'integer', description: 'First line to return.', minimum: 1 },
      { name: 'end_line', type: 'integer', description: 'Last line to return.', minimum: 1 },
    ],
  },
  {
    operationId: 'display_file',
    method: 'get',
    path: '/files/display',
    description: 'Show a file to the user in the file preview.',
    query: [path('path', 'The file to show.')],
  },
  {
    operationId: 'write_file',
    method: 'post',
    path: '/files/write',
    description: 'Write a text file (parent directories are created).',
    body: { properties: { path: { type: 'string', description: 'The file to write.' }, content: { type: 'string', description: 'Its whole content.' } }, required: ['path', 'content'] },
  },
  {
    operationId: 'replace_file_content',
    method: 'post',
    path: '/files/replace',
    description: 'Replace exact strings in a file. Each target must occur once unless allow_multiple is true.',
    body: {
      properties: {
        path: { type: 'string', description: 'The file to edit.' },
        replacements: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              target: { type: 'string' },
              replacement: { type: 'string' },
              start_line: { type: 'integer' },
              end_line: { type: 'integer' },
              allow_multiple: { type: 'boolean', default: false },
            },
            required: ['target', 'replacement'],
          },
        },
      },
      required: ['path', 'replacements'],
    },
  },
  {
    operationId: 'grep_search',
    method: 'get',
    path: '/files/grep',
    description: 'Search file contents under a path.',
    query: [
      { name: 'query', type: 'string', description: 'The text or regular expression to find.', required: true },
      path('path', 'Where to search.', '.'),
      { name: 'regex', type: 'boolean', description: 'Treat query as a regular expression.', default: true },
      { name: 'case_insensitive', type: 'boolean', description: 'Ignore case.', default: false },
      { name: 'include', type: 'array', description: 'File name patterns to search, such as *.py.' },
      { name: 'match_per_line', type: 'boolean', description: 'One result per matching line (false: one per file).', default: true },
      { name: 'max_results', type: 'integer', description: 'At most this many results (1-500).', default: 50, minimum: 1, maximum: 500 },
    ],
  },
  {
    operationId: 'glob_search',
    method: 'get',
    path: '/files/glob',
    description: 'Find files by glob pattern (** for any depth).',
    query: [
      { name: 'pattern', type: 'string', description: 'The glob pattern.', required: true },
      path('path', 'Where to search.', '.'),
      { name: 'exclude', type: 'array', description: 'Patterns to leave out.' },
      { name: 'type', type: 'string', description: 'any, file or directory.', default: 'any' },
      { name: 'max_results', type: 'integer', description: 'At most this many results (1-500).', default: 50, minimum: 1, maximum: 500 },
    ],
  },
]

export function operation (operationId: string): ToolOperation {
  const found = TOOL_OPERATIONS.find((item) => item.operationId === operationId)
  if (found === undefined) throw new Error(`no tool operation ${operationId}`)
  return found
}

/**
 * A query as Open WebUI sends it, read against the operation's parameters (spec §4.2): its backend
 * writes Python values (`True`, `5.0`, `['*.py']`), its browser writes `true`, `"null"` for null and
 * `a,b` for lists. Unknown parameters are ignored; a value that is none of these is a 400.
 */
export function readQuery (params: Param[] | undefined, query: Record<string, unknown>): Record<string, unknown> {
  const values: Record<string, unknown> = {}
  for (const param of params ?? []) {
    const raw = query[param.name]
    const text = Array.isArray(raw) ? raw.map(String) : raw
    if (text === undefined || text === 'null' || text === 'None' || (text === '' && param.type !== 'string')) {
      if (param.required === true) throw errors.invalidRequest(`${param.name} is required.`)
      if (param.default !== undefined) values[param.name] = param.default
      continue
    }
    values[param.name] = readValue(param, text as string | string[])
  }
  return values
}

function readValue (param: Param, text: string | string[]): unknown {
  if (param.type === 'array') return Array.isArray(text) ? text.flatMap((item) => readList(item)) : readList(text)
  const one = Array.isArray(text) ? text.at(-1) ?? '' : text
  if (param.type === 'string') return one
  if (param.type === 'boolean') {
    if (/^(true|1|yes)$/i.test(one)) return true
    if (/^(false|0|no)$/i.test(one)) return false
    throw errors.invalidRequest(`${param.name} must be true or false, not ${JSON.stringify(one.slice(0, 40))}.`)
  }
  const value = Number(one)
  if (one.trim() === '' || !Number.isFinite(value) || (param.type === 'integer' && !Number.isInteger(value))) {
    throw errors.invalidRequest(`${param.name} must be ${param.type === 'integer' ? 'a whole number' : 'a number'}, not ${JSON.stringify(one.slice(0, 40))}.`)
  }
  if ((param.minimum !== undefined && value < param.minimum) || (param.maximum !== undefined && value > param.maximum)) {
    throw errors.invalidRequest(`${param.name} must be between ${param.minimum ?? '-∞'} and ${param.maximum ?? '∞'}.`)
  }
  return value
}

/** `['*.py', "*.ts"]` (a Python list's repr) or `*.py,*.ts` (the browser's String(array)). */
function readList (text: string): string[] {
  const trimmed = text.trim()
  if (trimmed.startsWith('[') && trimmed.endsWith(']')) {
    const items = [...trimmed.slice(1, -1).matchAll(/'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"/g)]
    return items.map((match) => (match[1] ?? match[2] ?? '').replace(/\\(.)/g, '$1'))
  }
  return trimmed === '' ? [] : trimmed.split(',').map((item) => item.trim()).filter(Boolean)
}

/** The OpenAPI document Open WebUI reads (spec §3.3): only the model's tools, each param with a plain type. */
export function toolsDocument (title: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const op of TOOL_OPERATIONS) {
    const parameters = [
      ...(op.pathParams ?? []).map((param) => ({ name: param.name, in: 'path', required: true, description: param.description, schema: schemaOf(param) })),
      ...(op.query ?? []).map((param) => ({ name: param.name, in: 'query', required: param.required === true, description: param.description, schema: schemaOf(param) })),
    ]
    paths[op.path] ??= {}
    const entry = paths[op.path] as Record<string, unknown>
    entry[op.method] = {
      operationId: op.operationId,
      summary: op.description.split('. ')[0],
      description: op.description,
      parameters,
      ...(op.body === undefined
        ? {}
        : { requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', properties: op.body.properties, required: op.body.required } } } } }),
      responses: { 200: { description: 'OK', content: { 'application/json': { schema: { type: 'object' } } } } },
      security: [{ HTTPBearer: [] }],
    }
  }
  return {
    openapi: '3.1.0',
    info: { title, version: '1.0.0', description: 'A jailed terminal of your own: every command and file operation runs in a sandbox with its own limits, and no network.' },
    paths,
    components: { securitySchemes: { HTTPBearer: { type: 'http', scheme: 'bearer' } } },
  }
}

function schemaOf (param: Param): Record<string, unknown> {
  return {
    type: param.type,
    ...(param.type === 'array' ? { items: { type: 'string' } } : {}),
    ...(param.default === undefined ? {} : { default: param.default }),
    ...(param.minimum === undefined ? {} : { minimum: param.minimum }),
    ...(param.maximum === undefined ? {} : { maximum: param.maximum }),
    description: param.description,
  }
}

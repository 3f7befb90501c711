import assert from 'node:assert/strict'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { after, test, type TestContext } from 'node:test'

const REPO = path.resolve(import.meta.dirname, '..', '..')

export type Driver = 'bwrap' | 'nsjail'

/** The jail drivers this machine can run: bubblewrap always in CI, nsjail where it is installed. */
export function availableDrivers (): Driver[] {
  const found = (command: string, args: string[]) => {
    try {
      execFileSync(command, args, { stdio: 'pipe' })
      return true
    } catch (error) {
      return /Usage: .*nsjail/.test(String((error as { stderr?: Buffer }).stderr ?? ''))
    }
  }
  const drivers: Driver[] = []
  if (found('bwrap', ['--version'])) drivers.push('bwrap')
  if (found('nsjail', ['--help'])) drivers.push('nsjail')
  if (drivers.length === 0) throw new Error('no jail driver installed: apt-get install bubblewrap')
  return drivers
}

export interface RunningServer {
  baseUrl: string
  /** base URL the LibreChat client is given (…/v1) */
  apiUrl: string
  dataDir: string
  apiKey: string
  driver: Driver
  process: ChildProcess
  /** stop (SIGTERM) and wait for exit; resolves with the exit code */
  stop (): Promise<number | null>
  /** stop and start again on the same data directory and port */
  restart (): Promise<void>
  logs (): string
}

export interface ServerOptions {
  driver: Driver
  env?: Record<string, string>
  /** reuse a data directory (for restart tests); a fresh temporary one otherwise */
  dataDir?: string
  /** a command the server is started under, e.g. setpriv dropping a capability as Docker does */
  launcher?: string[]
  /** the API key (replicas of one deployment share theirs); a random one otherwise */
  apiKey?: string
}

const START_TIMEOUT_MS = Number(process.env.TEST_SERVER_START_TIMEOUT_MS ?? 90_000)

/**
 * Start the real server (`src/server.ts`, real jails) on an ephemeral port and wait until it reports
 * ready. It is stopped in `t.after`.
 */
export async function startServer (t: TestContext, options: ServerOptions): Promise<RunningServer> {
  const dataDir = options.dataDir ?? await mkdtemp(path.join(os.tmpdir(), 'warden-test-data-'))
  const apiKey = options.apiKey ?? 'test-key-' + Math.random().toString(36).slice(2)
  const env = {
    ...process.env,
    HOST: '127.0.0.1',
    PORT: '0',
    DATA_DIR: dataDir,
    CODE_API_KEY: apiKey,
    JAIL: options.driver,
    LOG_LEVEL: 'info',
    POOL_MIN: '2',
    POOL_MAX: '4',
    // servers of parallel test runs must not share outside uids
    JAIL_UID_BASE: String(2_000_000_000 + Math.floor(Math.random() * 100_000) * 1000),
    ...options.env,
  }
  let output = ''
  let port = 0
  const launch = async () => {
    const [command = process.execPath, ...args] = [...options.launcher ?? [], process.execPath, '--import', 'tsx', 'src/server.ts']
    const child = spawn(command, args, {
      cwd: REPO,
      env: { ...env, PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    const address = await new Promise<string>((resolve, reject) => {
      // a deadline against a server that hangs, not a measurement: test:host raises it for a guest under
      // software emulation. A server that missed it is killed, or it would keep the test process alive.
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`server did not start in ${START_TIMEOUT_MS} ms:\n${output.slice(-4000)}`))
      }, START_TIMEOUT_MS)
      createInterface({ input: child.stdout }).on('line', (line) => {
        output += line + '\n'
        if (line.includes('"Warden is ready"')) {
          clearTimeout(timer)
          resolve((JSON.parse(line) as { address: string }).address)
        }
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`server exited with ${code} before it was ready:\n${output.slice(-4000)}`))
      })
    })
    port = Number(new URL(address).port)
    return { child, address }
  }

  let { child, address } = await launch()
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const code = await exited
    clearTimeout(timer)
    return code
  }
  const server: RunningServer = {
    baseUrl: address,
    apiUrl: `${address}/v1`,
    dataDir,
    apiKey,
    driver: options.driver,
    get process () { return child },
    stop,
    restart: async () => {
      await stop()
      ;({ child, address } = await launch())
    },
    logs: () => output,
  }
  t.after(async () => {
    await stop()
    if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true })
  })
  return server
}

/** fetch with the server's API key. */
export async function api (server: RunningServer, route: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers)
  if (!headers.has('x-api-key')) headers.set('x-api-key', server.apiKey)
  return await fetch(`${server.apiUrl}${route}`, { ...init, headers })
}

/** Upload one file as LibreChat does (a `user` file of `userId`); its ids, or an assertion error naming the status. */
export async function uploadFile (server: RunningServer, name: string, data: string | Uint8Array, userId: string): Promise<{ sessionId: string, fileId: string }> {
  const form = new FormData()
  form.append('kind', 'user')
  form.append('id', userId)
  form.append('file', new Blob([data]), name)
  const response = await api(server, '/upload', { method: 'POST', body: form })
  const body = await response.json() as Record<string, any>
  assert.equal(response.status, 200, JSON.stringify(body))
  return { sessionId: body.storage_session_id, fileId: body.files[0].fileId }
}

/** POST /v1/exec with a JSON body, returning the parsed response and status. */
export async function exec (server: RunningServer, body: unknown): Promise<{ status: number, body: Record<string, any> }> {
  const response = await api(server, '/exec', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  return { status: response.status, body: await response.json() as Record<string, any> }
}

/** `startServer` stops its server in `t.after`; a suite has no `t`, so collect the cleanups for its `after` hook. */
export function suiteContext (): TestContext {
  const cleanups: Array<() => unknown> = []
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })
  return { after: (fn: () => unknown) => { cleanups.push(fn) } } as unknown as TestContext
}

/** Deadline of an end-to-end test: the LibreChat SDK sets no client timeout on /exec, so a hung server would hang the run. */
export const TEST_TIMEOUT_MS = 60_000

/** A test with that deadline. */
export function it (name: string, fn: () => Promise<void>): void {
  test(name, { timeout: TEST_TIMEOUT_MS }, fn)
}

import { spawn } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { Pool } from 'undici'
import { launchServer } from './launch.ts'
import { jailMemoryUsage, percentile } from './measure.ts'

/**
 * Open WebUI's Open Terminal path: one `run_command` tool call of `echo hi` as Open WebUI's backend makes
 * it (POST /terminal/execute?wait=5.0, the body repeating wait, X-User-Id), one user per connection, against
 * the same call to a bare `sh -c` behind a minimal unjailed HTTP server on loopback (Open Terminal itself
 * is on PyPI only, not installable here: spec §6.1); and what an idle terminal costs.
 */
export interface TerminalRow { target: 'warden' | 'bare sh -c', concurrency: number, calls: number, perSecond: number, p50: number, p99: number, errors: number }
export interface IdleTerminals { terminals: number, bytesEach: number, perGiB: number }

const COMMAND = 'echo hi'
const IDLE_TERMINALS = 20

async function drive (url: string, key: string, concurrency: number, durationMs: number): Promise<Omit<TerminalRow, 'target'>> {
  const pool = new Pool(url, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 })
  const latencies: number[] = []
  let errors = 0
  const call = async (user: number) => {
    const started = performance.now()
    const response = await pool.request({
      method: 'POST',
      path: '/terminal/execute?wait=5.0',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-user-id': `bench-${user}`, 'x-session-id': `chat-${user}` },
      body: JSON.stringify({ command: COMMAND, wait: 5.0 }),
    })
    const body = await response.body.json() as { status?: string, output?: Array<{ data: string }> }
    if (response.statusCode !== 200 || body.status !== 'done' || !(body.output ?? []).some((entry) => entry.data.includes('hi'))) throw new Error(`answered ${response.statusCode}: ${JSON.stringify(body).slice(0, 200)}`)
    return performance.now() - started
  }
  // warm-up: each user's terminal starts on its first call, outside the measurement
  await Promise.all(Array.from({ length: concurrency }, async (_, user) => await call(user).catch(() => 0)))
  const deadline = performance.now() + durationMs
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async (_, user) => {
    while (performance.now() < deadline) {
      try {
        latencies.push(await call(user))
      } catch {
        errors++
      }
    }
  }))
  const elapsedMs = performance.now() - started
  await pool.close()
  const sorted = latencies.sort((a, b) => a - b)
  return { concurrency, calls: latencies.length, perSecond: latencies.length / (elapsedMs / 1000), p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), errors }
}

/** The unjailed baseline: what Open Terminal does per call without its PTY, `sh -c` and the output as JSON. */
async function startBareShell (): Promise<{ url: string, server: Server }> {
  const server = createServer((request, response) => {
    let text = ''
    request.on('data', (chunk: Buffer) => { text += chunk.toString() })
    request.on('end', () => {
      const { command } = JSON.parse(text) as { command: string }
      const child = spawn('sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'] })
      let output = ''
      child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
      child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
      child.on('close', (code) => {
        response.setHeader('content-type', 'application/json')
        response.end(JSON.stringify({ status: 'done', exit_code: code, output: [{ type: 'output', data: output }] }))
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return { url: `http://127.0.0.1:${address.port}`, server }
}

export async function measureTerminals (options: { concurrencies: number[], durationMs: number, jail: string }): Promise<{ rows: TerminalRow[], idle: IdleTerminals }> {
  const rows: TerminalRow[] = []
  const users = Math.max(IDLE_TERMINALS, ...options.concurrencies)
  const server = await launchServer({ JAIL: options.jail, POOL_MIN: '4', POOL_MAX: '4', MAX_TERMINALS: String(users + 2), MAX_LIVE_WORKERS: String(users + 8) })
  try {
    for (const concurrency of options.concurrencies) rows.push({ target: 'warden', ...await drive(server.url, server.apiKey, concurrency, options.durationMs) })
  } finally {
    await server.stop()
  }
  const bare = await startBareShell()
  try {
    for (const concurrency of options.concurrencies) rows.push({ target: 'bare sh -c', ...await drive(bare.url, 'unused', concurrency, options.durationMs) })
  } finally {
    bare.server.close()
  }
  return { rows, idle: await measureIdleTerminals(options.jail) }
}

/** IDLE_TERMINALS users each run one command, then leave their terminal idle: the jails' memory grows by their cost. */
async function measureIdleTerminals (jail: string): Promise<IdleTerminals> {
  const server = await launchServer({ JAIL: jail, POOL_MIN: '2', POOL_MAX: '2', MAX_TERMINALS: String(IDLE_TERMINALS), MAX_TERMINALS_PER_USER: '1', MAX_LIVE_WORKERS: String(IDLE_TERMINALS + 4) })
  try {
    const usage = jailMemoryUsage(server.pid as number)
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const before = usage()
    for (let user = 0; user < IDLE_TERMINALS; user++) {
      const response = await fetch(`${server.url}/terminal/execute?wait=5`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${server.apiKey}`, 'x-user-id': `idle-${user}` },
        body: JSON.stringify({ command: COMMAND }),
      })
      if (response.status !== 200) throw new Error(`a terminal did not run: ${await response.text()}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const bytesEach = (usage() - before) / IDLE_TERMINALS
    return { terminals: IDLE_TERMINALS, bytesEach, perGiB: Math.floor(2 ** 30 / bytesEach) }
  } finally {
    await server.stop()
  }
}

export function describeTerminals (measured: { rows: TerminalRow[], idle: IdleTerminals }): string {
  const lines = [
    `## Open Terminal: one run_command tool call of \`${COMMAND}\``,
    '',
    '| target | c | calls | calls/s | p50 ms | p99 ms | errors |',
    '|---|---|---|---|---|---|---|',
    ...measured.rows.map((row) => `| ${row.target} | ${row.concurrency} | ${row.calls} | ${row.perSecond.toFixed(1)} | ${row.p50.toFixed(1)} | ${row.p99.toFixed(1)} | ${row.errors} |`),
    '',
    `Idle terminals: ${measured.idle.terminals} terminals, each after one command, cost ${(measured.idle.bytesEach / 2 ** 20).toFixed(2)} MiB of memory each ` +
      `(cgroup counters of the server's jails): ${measured.idle.perGiB} idle terminals per GiB.`,
  ]
  return lines.join('\n')
}

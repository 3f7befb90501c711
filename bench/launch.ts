import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'

const REPO = path.resolve(import.meta.dirname, '..')

export interface BenchServer {
  url: string
  apiKey: string
  /** the server's pid, for CPU accounting; null for a server given by BENCH_URL */
  pid: number | null
  stop (): Promise<void>
}

/** Start `src/server.ts` on a free port with `env`, and wait until it is ready. */
export async function launchServer (env: Record<string, string>): Promise<BenchServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'warden-bench-'))
  const apiKey = 'bench-' + Math.random().toString(36).slice(2)
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: REPO,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', DATA_DIR: dataDir, CODE_API_KEY: apiKey, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  // a benchmark that dies of an exception must not leave its server and jails running
  const killChild = () => { if (child.exitCode === null) child.kill('SIGTERM') }
  process.once('exit', killChild)
  let output = ''
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 120_000)
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.includes('"Warden is ready"')) return
      clearTimeout(timer)
      resolve((JSON.parse(line) as { address: string }).address)
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}:\n${output}`)) })
  })
  return {
    url,
    apiKey,
    pid: child.pid ?? null,
    stop: async () => {
      process.off('exit', killChild)
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      await rm(dataDir, { recursive: true, force: true })
    },
  }
}

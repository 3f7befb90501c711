import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises'
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

/**
 * A real jupyter_server (Debian's jupyter-server with python3-ipykernel) on a free port, as the Jupyter
 * rows' baseline: what Open WebUI talks to without Warden. Null when it is not installed.
 */
export async function launchJupyterServer (): Promise<BenchServer | null> {
  const binary = '/usr/bin/jupyter-server'
  if (!existsSync(binary)) return null
  const root = await mkdtemp(path.join(os.tmpdir(), 'warden-bench-jupyter-'))
  await mkdir(path.join(root, 'runtime'))
  const token = 'bench' + Math.random().toString(36).slice(2)
  const port = 20_000 + Math.floor(Math.random() * 20_000)
  const child = spawn(binary, ['--no-browser', '--allow-root', `--ServerApp.token=${token}`, `--ServerApp.port=${port}`, '--ServerApp.ip=127.0.0.1', `--ServerApp.root_dir=${root}`], {
    // the kernels must be Debian's python3 (it has ipykernel and the data stack)
    env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, JUPYTER_RUNTIME_DIR: path.join(root, 'runtime') },
    stdio: ['ignore', 'ignore', 'ignore'],
  })
  const url = `http://127.0.0.1:${port}`
  for (let attempt = 0; ; attempt++) {
    try {
      if ((await fetch(`${url}/api?token=${token}`)).ok) break
    } catch {}
    if (attempt > 100 || child.exitCode !== null) { child.kill(); return null }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return {
    url,
    apiKey: token,
    pid: null,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      await rm(root, { recursive: true, force: true })
    },
  }
}

/**
 * Start `src/server.ts` of `repo` (this checkout by default) on a free port with `env`, and wait until it is
 * ready. Its API key is `env.CODE_API_KEY` (replicas of one deployment share theirs), a random one otherwise.
 */
export async function launchServer (env: Record<string, string>, repo: string = REPO): Promise<BenchServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'warden-bench-'))
  const apiKey = env.CODE_API_KEY ?? 'bench-' + Math.random().toString(36).slice(2)
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: repo,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', DATA_DIR: dataDir, LOG_LEVEL: 'info', ...env, CODE_API_KEY: apiKey },
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

/**
 * Another commit of this repository as a directory a server can start from (BENCH_COMPARE_REF): its tree
 * exported with `git archive` into a temporary directory (no worktree, nothing in .git changes), this
 * checkout's node_modules linked in. `remove` deletes it.
 */
export async function exportCommit (ref: string): Promise<{ dir: string, commit: string, remove: () => Promise<void> }> {
  const git = (args: string[]) => execFileSync('git', args, { cwd: REPO, maxBuffer: 1 << 30 })
  const commit = git(['rev-parse', '--short', `${ref}^{commit}`]).toString().trim()
  const dir = await mkdtemp(path.join(os.tmpdir(), `warden-bench-${commit}-`))
  execFileSync('tar', ['-x', '-C', dir], { input: git(['archive', '--format=tar', commit]), maxBuffer: 1 << 30 })
  await symlink(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'))
  return { dir, commit, remove: async () => await rm(dir, { recursive: true, force: true }) }
}

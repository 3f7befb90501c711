import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'

/** Debian's redis-server (`.ci/run` installs it) on a free loopback port, with nothing persisted. */
export interface RunningRedis {
  url: string
  port: number
  /** stop the server (SIGKILL, as a crash); `start` brings an empty one back on the same port */
  stop (): Promise<void>
  start (): Promise<void>
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

export async function startRedis (t: { after (fn: () => Promise<void>): void }): Promise<RunningRedis> {
  const port = await freePort()
  let child: ChildProcess | null = null
  const start = async () => {
    const started = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] })
    child = started
    await new Promise<void>((resolve, reject) => {
      let output = ''
      started.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        if (output.includes('Ready to accept connections')) resolve()
      })
      started.once('exit', (code) => { reject(new Error(`redis-server exited with ${code}:\n${output}`)) })
    })
  }
  const stop = async () => {
    const running = child
    child = null
    if (running === null || running.exitCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGKILL')
    await exited
  }
  await start()
  t.after(stop)
  return { url: `redis://127.0.0.1:${port}`, port, stop, start }
}

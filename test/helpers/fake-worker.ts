import { randomBytes } from 'node:crypto'
import type { CgroupCounters } from '../../src/jail/cgroup.ts'
import { FrameType, MARKER_BYTES, encodeFrame } from '../../src/pool/protocol.ts'
import { Run, type RunLink, type WorkerJob } from '../../src/pool/run.ts'

/** What a fake run does: print, write files, exit, or die like a worker killed by a limit. */
export interface FakeBehaviour {
  stdout?: string
  stderr?: string
  exitCode?: number
  signal?: number | null
  /** output files the "code" wrote, sent back as a worker would (they are only kept when it succeeds) */
  files?: Array<{ name: string, data: string }>
  /** the worker dies without reporting (an OOM kill when `oomKills` > 0) */
  vanish?: boolean
  oomKills?: number
  /** never finish: only a kill ends the run */
  hang?: boolean
  deleted?: string[]
}

/**
 * A worker without a jail for in-process tests: `start` returns a real `Run` (the production event,
 * marker and result logic) fed as a worker's sockets would feed it, from a scripted behaviour.
 */
export class FakeWorker {
  readonly id = `fake/${randomBytes(4).toString('hex')}`
  readonly jobs: WorkerJob[] = []
  lastRunMs: number | null = null
  isAlive = true
  disposed = false

  constructor (private readonly behave: (job: WorkerJob) => FakeBehaviour | Promise<FakeBehaviour>, private readonly leftover = 0) {}

  start (job: WorkerJob): Run {
    this.jobs.push(job)
    let counters: CgroupCounters = { oomKills: 0, memoryPeakBytes: 1 << 20, cpuUsageUs: 1000, pidsPeak: 1 }
    let killed: (() => void) | null = null
    const link: RunLink = {
      write: async () => {},
      interrupt: () => {},
      kill: () => { killed?.() },
      readCounters: async () => counters,
      pressure: () => {},
    }
    const run = new Run(link, job, randomBytes(MARKER_BYTES), 1 << 24)
    let dead = false
    const die = (oomKills: number) => {
      if (dead) return
      dead = true
      counters = { ...counters, oomKills }
      run.onStdoutEnd()
      run.onStderrEnd()
      run.onControlEnd()
      run.onExit(9, false)
    }
    killed = () => die(counters.oomKills)
    setImmediate(async () => {
      const behaviour = await this.behave(job)
      run.onFrame({ type: FrameType.started, payload: Buffer.alloc(0) })
      if (behaviour.stdout !== undefined) run.onStdout(Buffer.from(behaviour.stdout))
      if (behaviour.stderr !== undefined) run.onStderr(Buffer.from(behaviour.stderr))
      if (behaviour.hang === true) return
      if (behaviour.vanish === true) return die(behaviour.oomKills ?? 0)
      const succeeded = (behaviour.exitCode ?? 0) === 0 && (behaviour.signal ?? null) === null
      for (const file of succeeded ? behaviour.files ?? [] : []) {
        run.onFrame({ type: FrameType.output, payload: Buffer.from(JSON.stringify({ name: file.name })) })
        run.onFrame({ type: FrameType.data, payload: Buffer.from(file.data) })
        run.onFrame({ type: FrameType.outputEnd, payload: Buffer.from(JSON.stringify({ size: Buffer.byteLength(file.data) })) })
      }
      run.onFrame({
        type: FrameType.done,
        payload: encodeFrame(FrameType.done, Buffer.from(JSON.stringify({
          exit_code: behaviour.exitCode ?? 0,
          signal: behaviour.signal ?? null,
          deleted: behaviour.deleted ?? [],
          notes: [],
          discarded: succeeded ? 0 : (behaviour.files?.length ?? 0),
        }))).subarray(5),
      })
      run.onStdout(run.marker)
      run.onStderr(run.marker)
    })
    run.done.then((result) => { this.lastRunMs = result.wallMs }, () => {})
    return run
  }

  async survivors (): Promise<number | null> { return this.leftover }

  dispose (): void {
    this.disposed = true
    this.isAlive = false
  }
}

import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import type { Duplex, Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Cgroups, CgroupCounters, CgroupLimits } from '../jail/cgroup.ts'
import { JAIL_PATHS, SLOT_INSIDE_UID_BASE, type JailDriver } from '../jail/jail-spec.ts'
import { Slot, type ExitStatus, type SlotOwner, type SlotState } from './slot.ts'
import { Worker } from './worker.ts'

/** What a zygote needs to know at start; the same for every zygote of a pool. */
export interface ZygoteOptions {
  index: number
  driver: JailDriver
  cgroups: Cgroups | null
  sandboxDir: string
  etcDir: string
  pythonPath: string
  zygoteUid: number
  slotUidBase: number
  slotCount: number
  workerLimits: CgroupLimits
  /** sent as the zygote's first control line (see sandbox/README.md) */
  sandboxConfig: Record<string, unknown>
  startTimeoutMs: number
  log: Logger
}

// Write the shell's own pid into each cgroup, then become the jail: a pid moved after spawn would race
// with the jail's own forks (DESIGN.md "The jail").
const CGROUP_WRAPPER = 'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
const FIRST_SLOT_FD = 4
const WORKER_READY_TIMEOUT_MS = 15_000

interface ControlEvent { ev?: string, slot?: number, pid?: number, code?: number | null, signal?: number | null, fence?: string, message?: string }

/**
 * One jail holding a warm interpreter (sandbox/zygote.py) and its worker slots. It forks a fresh,
 * re-isolated worker per execution; a worker never outlives its one job.
 */
export class Zygote implements SlotOwner {
  readonly name: string
  private readonly slots: Slot[] = []
  private readonly control: Duplex
  private readonly spawnWaiters = new Map<number, { resolve: () => void, reject: (error: Error) => void }>()
  private readonly slotWaiters: Array<{ resolve: () => void, reject: (error: Error) => void }> = []
  private controlBuffer = ''
  private exitReason: string | null = null
  readonly exited: Promise<void>

  private constructor (private readonly options: ZygoteOptions, private readonly child: ChildProcess) {
    this.name = `z${options.index}`
    this.control = child.stdio[3] as Duplex
    this.control.setEncoding('utf8')
    this.control.on('data', (text: string) => this.onControl(text))
    this.control.on('error', () => {})
    for (let index = 0; index < options.slotCount; index++) {
      const [ctl, out, err] = [0, 1, 2].map((offset) => child.stdio[FIRST_SLOT_FD + 3 * index + offset])
      this.slots.push(new Slot(index, ctl as Duplex, out as Readable, err as Readable, this))
    }
    this.exited = once(child, 'exit').then(([code, signal]) => {
      this.markLost(`the zygote exited (code ${String(code)}, signal ${String(signal)})`)
    })
    forwardLog(child.stdout, options.log, 'debug')
    forwardLog(child.stderr, options.log, 'warn')
  }

  /** Spawn the jail, configure the zygote and wait until its imports are done. */
  static async start (options: ZygoteOptions): Promise<Zygote> {
    const name = `z${options.index}`
    const group = options.cgroups === null
      ? null
      : await options.cgroups.createZygoteGroup(name, options.zygoteUid, {
        memoryBytes: 2 * 1024 ** 3, pidsMax: 256, cpuWeightPercent: 25,
      })
    const launch = options.driver.launch({
      sandboxDir: options.sandboxDir,
      etcDir: options.etcDir,
      pythonPath: options.pythonPath,
      zygoteUid: options.zygoteUid,
      slotUidBase: options.slotUidBase,
      slotCount: options.slotCount,
      binds: group?.bindMounts ?? [],
      inheritedFdCount: 1 + 3 * options.slotCount,
    })
    const stdio = ['ignore', 'pipe', 'pipe', ...Array<'pipe'>(1 + 3 * options.slotCount + launch.driverFdCount).fill('pipe')] as const
    const child = spawn('sh', ['-c', CGROUP_WRAPPER, 'sh', ...(group?.launcherProcsFiles ?? []), '--', ...launch.argv], {
      stdio: [...stdio],
    })
    const zygote = new Zygote(options, child)
    try {
      await withTimeout((async () => {
        await once(child, 'spawn')
        await launch.afterSpawn(child, 3 + 1 + 3 * options.slotCount)
        zygote.send({
          ...options.sandboxConfig,
          slot_uid_base: SLOT_INSIDE_UID_BASE,
          hidden_paths: JAIL_PATHS.hidden,
        })
        await zygote.readyEvent()
      })(), options.startTimeoutMs, `the zygote did not become ready within ${options.startTimeoutMs} ms`)
    } catch (error) {
      await zygote.close()
      throw error
    }
    return zygote
  }

  get isAlive (): boolean { return this.exitReason === null }
  get pid (): number | undefined { return this.child.pid }
  get freeSlots (): number { return this.slots.filter((slot) => slot.state === 'free').length }

  /** How many slots are in each state, for /health. */
  slotStates (): Partial<Record<SlotState, number>> {
    const states: Partial<Record<SlotState, number>> = {}
    for (const slot of this.slots) states[slot.state] = (states[slot.state] ?? 0) + 1
    return states
  }

  /** Resolves when a slot becomes free (or at once if one is); rejects when the zygote is gone. */
  waitForFreeSlot (): Promise<void> {
    if (this.exitReason !== null) return Promise.reject(new Error(this.exitReason))
    if (this.freeSlots > 0) return Promise.resolve()
    return new Promise((resolve, reject) => this.slotWaiters.push({ resolve, reject }))
  }

  slotFreed (): void {
    for (const waiter of this.slotWaiters.splice(0)) waiter.resolve()
  }

  /** Fork a worker into a free slot and wait until it is isolated and ready. */
  async spawnWorker (): Promise<Worker> {
    if (this.exitReason !== null) throw new Error(this.exitReason)
    const slot = this.slots.find((candidate) => candidate.state === 'free')
    if (slot === undefined) throw new Error('no free worker slot')
    const ready = slot.begin()
    ready.catch(() => {})
    let forked = false
    try {
      const cgroups = this.options.cgroups
      if (cgroups !== null) slot.cgroup ??= await cgroups.createWorkerGroup(this.name, slot.name, this.options.zygoteUid, this.options.workerLimits)
      const spawned = new Promise<void>((resolve, reject) => this.spawnWaiters.set(slot.index, { resolve, reject }))
      this.send({ op: 'spawn', slot: slot.index, cgroup_procs: slot.cgroup?.jailProcsFiles ?? [] })
      forked = true
      await withTimeout(Promise.all([spawned, ready]), WORKER_READY_TIMEOUT_MS, 'the worker did not become ready in time')
    } catch (error) {
      this.spawnWaiters.delete(slot.index)
      if (forked) {
        slot.release() // drains: the zygote reports the worker's exit once the kill lands
      } else {
        slot.abandon(this.cleanSlot(slot))
      }
      throw error
    }
    return new Worker(`${this.name}/${slot.name}/${slot.generation}`, slot.lease())
  }

  killSlot (slot: Slot): void {
    const cgroups = this.options.cgroups
    if (cgroups === null) {
      this.send({ op: 'kill', slot: slot.index })
      return
    }
    cgroups.killWorkerGroup(this.name, slot.name).catch((error: Error) => {
      this.options.log.warn({ err: error, slot: slot.name }, 'cgroup kill failed; asking the zygote')
      this.send({ op: 'kill', slot: slot.index })
    })
  }

  async readSlotCounters (slot: Slot): Promise<CgroupCounters | null> {
    return this.options.cgroups === null ? null : await this.options.cgroups.readCounters(this.name, slot.name)
  }

  async countSlotProcesses (slot: Slot): Promise<number | null> {
    return this.options.cgroups === null ? null : (await this.options.cgroups.listProcesses(this.name, slot.name)).length
  }

  /** Between two workers: nothing of the last one may remain in the slot's cgroup. */
  async cleanSlot (slot: Slot): Promise<void> {
    if (slot.cgroup === null || this.options.cgroups === null) return
    try {
      await this.options.cgroups.resetWorkerGroup(this.name, slot.name)
    } catch (error) {
      this.options.log.error({ err: error, slot: slot.name }, 'could not reset a worker cgroup; the slot is retired')
      throw error
    }
  }

  /** Stop the zygote (closing its control socket ends the jail) and remove its cgroups. */
  async close (): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.control.end()
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 3_000)
      await this.exited
      clearTimeout(timer)
    }
    await this.options.cgroups?.removeZygoteGroup(this.name).catch((error: Error) => {
      this.options.log.warn({ err: error, zygote: this.name }, 'could not remove the zygote cgroup')
    })
  }

  private send (message: Record<string, unknown>): void {
    this.control.write(`${JSON.stringify(message)}\n`)
  }

  private readyWaiter: { resolve: () => void, reject: (error: Error) => void } | null = null

  private readyEvent (): Promise<void> {
    return new Promise((resolve, reject) => { this.readyWaiter = { resolve, reject } })
  }

  private onControl (text: string): void {
    this.controlBuffer += text
    let newline = this.controlBuffer.indexOf('\n')
    while (newline >= 0) {
      const line = this.controlBuffer.slice(0, newline)
      this.controlBuffer = this.controlBuffer.slice(newline + 1)
      if (line.trim() !== '') this.onEvent(parseEvent(line))
      newline = this.controlBuffer.indexOf('\n')
    }
  }

  private onEvent (event: ControlEvent): void {
    const slot = typeof event.slot === 'number' ? this.slots[event.slot] : undefined
    switch (event.ev) {
      case 'ready':
        this.options.log.info({ zygote: this.name, pid: this.child.pid }, 'zygote ready')
        this.readyWaiter?.resolve()
        this.readyWaiter = null
        return
      case 'spawned':
        if (slot !== undefined) this.takeSpawnWaiter(slot.index)?.resolve()
        return
      case 'spawn_failed':
        if (slot === undefined) return
        this.takeSpawnWaiter(slot.index)?.reject(new Error(event.message ?? 'spawn failed'))
        slot.onSpawnFailed(event.message ?? 'spawn failed')
        return
      case 'exited': {
        if (slot === undefined || typeof event.fence !== 'string') return
        const status: ExitStatus = { code: event.code ?? null, signal: event.signal ?? null }
        slot.onExited(status, Buffer.from(event.fence, 'hex'))
        return
      }
      default:
        this.options.log.warn({ zygote: this.name, event: event.ev, message: event.message }, 'unexpected zygote event')
    }
  }

  private takeSpawnWaiter (index: number) {
    const waiter = this.spawnWaiters.get(index)
    this.spawnWaiters.delete(index)
    return waiter
  }

  private markLost (reason: string): void {
    if (this.exitReason !== null) return
    this.exitReason = reason
    this.readyWaiter?.reject(new Error(reason))
    for (const waiter of this.spawnWaiters.values()) waiter.reject(new Error(reason))
    this.spawnWaiters.clear()
    for (const slot of this.slots) slot.onLost(reason)
    for (const waiter of this.slotWaiters.splice(0)) waiter.reject(new Error(reason))
  }
}

function parseEvent (line: string): ControlEvent {
  try {
    return JSON.parse(line) as ControlEvent
  } catch {
    return { ev: 'unparsable', message: line.slice(0, 200) }
  }
}

function forwardLog (stream: Readable | null, log: Logger, level: 'debug' | 'warn'): void {
  stream?.setEncoding('utf8')
  stream?.on('data', (text: string) => {
    for (const line of text.split('\n')) if (line.trim() !== '') log[level]({ source: 'zygote' }, line.slice(0, 2000))
  })
}

async function withTimeout<T> (promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(message)), ms) }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

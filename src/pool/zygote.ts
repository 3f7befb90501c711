import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import path from 'node:path'
import type { Duplex, Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Cgroups, CgroupCounters, CgroupLimits } from '../jail/cgroup.ts'
import { JAIL_PATHS, SLOT_INSIDE_UID_BASE, type JailDriver } from '../jail/jail-spec.ts'
import { ChannelListener, type WorkerSockets } from './channels.ts'
import { Slot, type SlotOwner, type SlotState } from './slot.ts'
import { Worker, type MessageBudget, type SlotLink } from './worker.ts'
import { ZygoteEventDecoder, encodeRequest, type ZygoteEvent, type ZygoteRequest } from './zygote-control.ts'

/** What a zygote needs to know at start; the same for every zygote of a pool. */
export interface ZygoteOptions {
  index: number
  driver: JailDriver
  cgroups: Cgroups | null
  sandboxDir: string
  etcDir: string
  /** host directory for this zygote's channel listener, bound into its jail alone */
  channelDir: string
  pythonPath: string
  zygoteUid: number
  slotUidBase: number
  slotCount: number
  workerLimits: CgroupLimits
  /** message budgets: what a worker must accept (a whole job) and what the server accepts from it */
  messageBytes: MessageBudget
  /** sent as the zygote's first control line (see sandbox/README.md) */
  sandboxConfig: Record<string, unknown>
  startTimeoutMs: number
  log: Logger
}

// Write the shell's own pid into each cgroup, then become the jail: a pid moved after spawn would race
// with the jail's own forks (DESIGN.md "The jail").
const CGROUP_WRAPPER = 'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
const WORKER_READY_TIMEOUT_MS = 15_000

/**
 * One jail holding a warm interpreter (sandbox/zygote.py) and its worker slots. It forks a fresh,
 * re-isolated worker on request; each worker connects to this zygote's channel listener on its own.
 */
export class Zygote implements SlotOwner {
  readonly name: string
  readonly exited: Promise<void>
  private readonly slots: Slot[] = []
  private readonly control: Duplex
  private readonly events = new ZygoteEventDecoder()
  private readonly spawnWaiters = new Map<number, { resolve: () => void, reject: (error: Error) => void }>()
  private readonly slotWaiters: Array<{ resolve: () => void, reject: (error: Error) => void }> = []
  private readyWaiter: { resolve: () => void, reject: (error: Error) => void } | null = null
  private exitReason: string | null = null

  private constructor (private readonly options: ZygoteOptions, private readonly child: ChildProcess, private readonly channels: ChannelListener) {
    this.name = `z${options.index}`
    this.control = child.stdio[3] as Duplex
    this.control.setEncoding('utf8')
    this.control.on('data', (text: string) => { for (const event of this.events.push(text)) this.onEvent(event) })
    // every pipe of the jail gets a handler: a jail that dies (or never starts) must not crash the server
    for (const stream of child.stdio) stream?.on('error', () => {})
    for (let index = 0; index < options.slotCount; index++) this.slots.push(new Slot(index, this))
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        this.markLost(`the zygote exited (code ${String(code)}, signal ${String(signal)})`)
        resolve()
      })
      child.once('error', (error) => {
        this.markLost(`the jail could not be started: ${error.message}`)
        resolve()
      })
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
    const channels = await ChannelListener.open(options.channelDir, options.zygoteUid)
    const launch = options.driver.launch({
      sandboxDir: options.sandboxDir,
      etcDir: options.etcDir,
      pythonPath: options.pythonPath,
      zygoteUid: options.zygoteUid,
      slotUidBase: options.slotUidBase,
      slotCount: options.slotCount,
      binds: [...group?.bindMounts ?? [], { hostPath: options.channelDir, jailPath: JAIL_PATHS.channel }],
      inheritedFdCount: 1,
    })
    const stdio = ['ignore', 'pipe', 'pipe', 'pipe', ...Array<'pipe'>(launch.driverFdCount).fill('pipe')] as const
    const child = spawn('sh', ['-c', CGROUP_WRAPPER, 'sh', ...(group?.launcherProcsFiles ?? []), '--', ...launch.argv], {
      stdio: [...stdio],
    })
    const zygote = new Zygote(options, child, channels)
    try {
      await withTimeout((async () => {
        await Promise.race([once(child, 'spawn'), zygote.exited.then(() => { throw new Error(zygote.exitReason ?? 'the jail exited') })])
        await launch.afterSpawn(child, 4)
        zygote.send({
          ...options.sandboxConfig,
          slot_uid_base: SLOT_INSIDE_UID_BASE,
          hidden_paths: JAIL_PATHS.hidden,
          max_message_bytes: options.messageBytes.toWorker,
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

  /** Fork a worker into a free slot and wait until it is connected, isolated and ready. */
  async spawnWorker (): Promise<Worker> {
    if (this.exitReason !== null) throw new Error(this.exitReason)
    const slot = this.slots.find((candidate) => candidate.state === 'free')
    if (slot === undefined) throw new Error('no free worker slot')
    const link = slot.begin()
    const expected = this.channels.expect()
    let requested = false
    let refused = false
    try {
      const cgroups = this.options.cgroups
      if (cgroups !== null) slot.cgroup ??= await cgroups.createWorkerGroup(this.name, slot.name, this.options.zygoteUid, this.options.workerLimits)
      const spawned = new Promise<void>((resolve, reject) => this.spawnWaiters.set(slot.index, { resolve, reject }))
      spawned.catch(() => { refused = true })
      this.send({ op: 'spawn', slot: slot.index, token: expected.token, cgroup_procs: slot.cgroup?.jailProcsFiles ?? [] })
      requested = true
      return await withTimeout(this.connectWorker(slot, link, spawned, expected.sockets), WORKER_READY_TIMEOUT_MS, 'the worker did not become ready in time')
    } catch (error) {
      this.spawnWaiters.delete(slot.index)
      expected.cancel()
      if (requested && !refused) {
        link.kill('spawn failed') // the zygote reports the exit, then the slot cleans itself
      } else {
        slot.abandon(this.cleanSlot(slot))
      }
      throw error
    }
  }

  private async connectWorker (slot: Slot, link: SlotLink, spawned: Promise<void>, sockets: Promise<WorkerSockets>): Promise<Worker> {
    await spawned
    const connected = await Promise.race([sockets, link.exited.then((status) => {
      throw new Error(`the worker exited before it connected (code ${status.code}, signal ${status.signal})`)
    })])
    const worker = new Worker(`${this.name}/${slot.name}/${slot.generation}`, connected, link, this.options.messageBytes)
    try {
      await worker.ready
    } catch (error) {
      worker.dispose()
      throw error
    }
    slot.occupied()
    return worker
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

  interruptSlot (slot: Slot): void {
    this.send({ op: 'interrupt', slot: slot.index })
  }

  /** A run needs only the slot's OOM kills (one file), read before and after it. */
  async readSlotCounters (slot: Slot): Promise<CgroupCounters | null> {
    if (this.options.cgroups === null || slot.cgroup === null) return null
    return { oomKills: await this.options.cgroups.readOomKills(this.name, slot.name), memoryPeakBytes: null, cpuUsageUs: null, pidsPeak: null }
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

  /** Stop the zygote (closing its control socket ends the jail), its listener and its cgroups. */
  async close (): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined) {
      this.control.end()
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 3_000)
      await this.exited
      clearTimeout(timer)
    }
    await this.channels.close().catch(() => {})
    await this.options.cgroups?.removeZygoteGroup(this.name).catch((error: Error) => {
      this.options.log.warn({ err: error, zygote: this.name }, 'could not remove the zygote cgroup')
    })
  }

  private send (message: ZygoteRequest | Record<string, unknown>): void {
    if (this.exitReason !== null || this.control.destroyed) return
    this.control.write(encodeRequest(message))
  }

  private readyEvent (): Promise<void> {
    if (this.exitReason !== null) return Promise.reject(new Error(this.exitReason))
    return new Promise((resolve, reject) => { this.readyWaiter = { resolve, reject } })
  }

  private onEvent (event: ZygoteEvent | { ev: 'unreadable', line: string }): void {
    switch (event.ev) {
      case 'ready':
        this.options.log.info({ zygote: this.name, pid: this.child.pid }, 'zygote ready')
        this.readyWaiter?.resolve()
        this.readyWaiter = null
        return
      case 'spawned':
        this.takeSpawnWaiter(event.slot)?.resolve()
        return
      case 'spawn_failed': {
        this.takeSpawnWaiter(event.slot)?.reject(new Error(event.message))
        return
      }
      case 'exited':
        this.slots[event.slot]?.onExited({ code: event.code, signal: event.signal })
        return
      case 'error':
        this.options.log.warn({ zygote: this.name, message: event.message }, 'the zygote refused a request')
        return
      default:
        this.options.log.warn({ zygote: this.name, line: event.line }, 'unreadable zygote event')
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
    this.readyWaiter = null
    for (const waiter of this.spawnWaiters.values()) waiter.reject(new Error(reason))
    this.spawnWaiters.clear()
    for (const slot of this.slots) slot.onLost()
    for (const waiter of this.slotWaiters.splice(0)) waiter.reject(new Error(reason))
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

/** Where a zygote's channel listener lives on the host, under the server's runtime directory. */
export function channelDirFor (runtimeRoot: string, index: number): string {
  return path.join(runtimeRoot, 'channels', `z${index}`)
}

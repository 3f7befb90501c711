import type { Duplex, Readable } from 'node:stream'
import type { CgroupCounters, WorkerCgroup } from '../jail/cgroup.ts'
import { FencedCollector, FrameDecoder, type Frame } from './protocol.ts'

export interface SlotHandlers {
  frame (frame: Frame): void
  stdout (chunk: Buffer): void
  stderr (chunk: Buffer): void
  /** the worker's pid namespace is gone; `fence` closes its bytes on every socket */
  exited (status: ExitStatus, fence: Buffer): void
  /** every frame the worker sent before the zygote's fence has been delivered */
  controlDrained (): void
  /** the zygote itself is gone: nothing more will come */
  lost (reason: string): void
}

export interface ExitStatus { code: number | null, signal: number | null }

/** What a worker needs from its slot; implemented by Slot, used by Worker. */
export interface SlotChannel {
  readonly isAlive: boolean
  attach (handlers: SlotHandlers): void
  write (bytes: Buffer): Promise<void>
  pause (): void
  resume (): void
  kill (reason: string): void
  readCounters (): Promise<CgroupCounters | null>
  /**
   * Processes left in the slot's cgroup once the worker's pid namespace is gone (null without
   * cgroups). Waits for that first; the slot is not cleaned while leased, so nothing is killed yet.
   */
  survivors (): Promise<number | null>
  release (): void
}

export type SlotState = 'free' | 'spawning' | 'ready' | 'running' | 'draining' | 'cleaning' | 'dead'

export interface SlotOwner {
  killSlot (slot: Slot, reason: string): void
  readSlotCounters (slot: Slot): Promise<CgroupCounters | null>
  countSlotProcesses (slot: Slot): Promise<number | null>
  cleanSlot (slot: Slot): Promise<void>
  /** the slot can take a new worker */
  slotFreed (slot: Slot): void
}

/**
 * A worker's hold on its slot: every call is ignored once released, so a late timer of a finished run
 * can never touch the next worker forked into the same slot.
 */
class SlotLease implements SlotChannel {
  private released = false
  constructor (private readonly slot: Slot, private readonly generation: number) {}
  private get valid (): boolean { return !this.released && this.slot.generation === this.generation }
  get isAlive (): boolean { return this.valid && this.slot.isAlive }
  attach (handlers: SlotHandlers): void { if (this.valid) this.slot.attach(handlers) }
  write (bytes: Buffer): Promise<void> { return this.valid ? this.slot.write(bytes) : Promise.reject(new Error('released')) }
  pause (): void { if (this.valid) this.slot.pause() }
  resume (): void { if (this.valid) this.slot.resume() }
  kill (reason: string): void { if (this.valid) this.slot.kill(reason) }
  readCounters (): Promise<CgroupCounters | null> { return this.valid ? this.slot.readCounters() : Promise.resolve(null) }
  survivors (): Promise<number | null> { return this.valid ? this.slot.survivors() : Promise.resolve(null) }
  release (): void {
    if (!this.valid) return
    this.released = true
    this.slot.release()
  }
}

/**
 * One of a zygote's worker positions: three sockets inherited by every worker that occupies it, one
 * after the other. A slot is free again only when the previous worker's pid namespace is gone and its
 * fence has been read on all three sockets, so no byte of one worker can be taken for the next one's.
 */
export class Slot {
  state: SlotState = 'free'
  generation = 0
  /** created on first use and kept for the slot's lifetime, reset between workers */
  cgroup: WorkerCgroup | null = null
  private decoder = new FrameDecoder()
  private outWatch = new FencedCollector(0, () => {})
  private errWatch = new FencedCollector(0, () => {})
  private handlers: SlotHandlers | null = null
  private readonly early: Frame[] = []
  private exited = false
  private markExited: () => void = () => {}
  private exitedPromise: Promise<void> = Promise.resolve()
  private drainedReported = false
  private leased = false
  private readyWaiter: { resolve: () => void, reject: (error: Error) => void } | null = null

  constructor (
    readonly index: number,
    private readonly ctl: Duplex,
    private readonly out: Readable,
    private readonly err: Readable,
    private readonly owner: SlotOwner
  ) {
    ctl.on('data', (chunk: Buffer) => this.onFrames(this.decoder.push(chunk)))
    out.on('data', (chunk: Buffer) => { this.outWatch.push(chunk); this.handlers?.stdout(chunk); this.maybeClean() })
    err.on('data', (chunk: Buffer) => { this.errWatch.push(chunk); this.handlers?.stderr(chunk); this.maybeClean() })
    for (const stream of [ctl, out, err]) stream.on('error', () => {}) // the zygote's exit is reported separately
  }

  get isAlive (): boolean { return (this.state === 'ready' || this.state === 'running') && !this.exited }
  get name (): string { return `s${this.index}` }

  /** A new worker is being forked into this slot; resolves when it reports ready. */
  begin (): Promise<void> {
    this.state = 'spawning'
    this.generation++
    this.decoder.reset()
    this.outWatch = new FencedCollector(0, () => {})
    this.errWatch = new FencedCollector(0, () => {})
    this.handlers = null
    this.early.length = 0
    this.exited = false
    this.exitedPromise = new Promise((resolve) => { this.markExited = resolve })
    this.drainedReported = false
    this.leased = false
    return new Promise((resolve, reject) => { this.readyWaiter = { resolve, reject } })
  }

  /** Hand the ready worker to one user; the slot is not reused until that user releases it. */
  lease (): SlotChannel {
    this.leased = true
    return new SlotLease(this, this.generation)
  }

  attach (handlers: SlotHandlers): void {
    this.state = 'running'
    this.decoder.holdBack = true
    this.handlers = handlers
    for (const frame of this.early.splice(0)) handlers.frame(frame)
  }

  async write (bytes: Buffer): Promise<void> {
    if (this.exited) throw new Error('the worker is gone')
    if (!this.ctl.write(bytes)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => { cleanup(); resolve() }
        const onClose = () => { cleanup(); reject(new Error('the worker is gone')) }
        const cleanup = () => { this.ctl.off('drain', onDrain); this.ctl.off('close', onClose) }
        this.ctl.once('drain', onDrain)
        this.ctl.once('close', onClose)
      })
    }
  }

  pause (): void { this.ctl.pause() }
  resume (): void { this.ctl.resume() }
  kill (reason: string): void { if (!this.exited) this.owner.killSlot(this, reason) }
  readCounters (): Promise<CgroupCounters | null> { return this.owner.readSlotCounters(this) }

  async survivors (): Promise<number | null> {
    await this.exitedPromise
    return await this.owner.countSlotProcesses(this)
  }

  release (): void {
    this.leased = false
    if (this.state === 'spawning' || this.state === 'ready' || this.state === 'running') this.state = 'draining'
    this.handlers = null
    this.kill('released')
    this.ctl.resume()
    this.maybeClean()
  }

  /** The zygote reaped this slot's worker and wrote `fence` on its three sockets. */
  onExited (status: ExitStatus, fence: Buffer): void {
    this.exited = true
    this.markExited()
    this.onFrames(this.decoder.setFence(fence))
    this.outWatch.expectFence(fence, true)
    this.errWatch.expectFence(fence, true)
    this.handlers?.exited(status, fence)
    this.readyWaiter?.reject(new Error(`the worker exited during setup (code ${status.code}, signal ${status.signal})`))
    this.readyWaiter = null
    if (this.state === 'spawning' || this.state === 'ready' || this.state === 'running') this.state = 'draining'
    this.maybeClean()
  }

  /** Nothing was forked (the spawn was never sent): free the slot once `cleanup` is done. */
  abandon (cleanup: Promise<void>): void {
    this.readyWaiter = null
    this.state = 'cleaning'
    cleanup.then(() => this.setFree(), () => { this.state = 'dead' })
  }

  /** The zygote refused or failed to fork this slot's worker. */
  onSpawnFailed (message: string): void {
    this.readyWaiter?.reject(new Error(message))
    this.readyWaiter = null
  }

  onLost (reason: string): void {
    this.state = 'dead'
    this.exited = true
    this.markExited()
    this.readyWaiter?.reject(new Error(reason))
    this.readyWaiter = null
    this.handlers?.lost(reason)
    this.handlers = null
  }

  private onFrames (frames: Frame[]): void {
    this.deliver(frames)
    if (this.decoder.isFenced && !this.drainedReported) {
      this.drainedReported = true
      this.handlers?.controlDrained()
    }
    // always: the zygote's fence may reach the control socket after its exit report (CPU contention)
    this.maybeClean()
  }

  private deliver (frames: Frame[]): void {
    for (const frame of frames) {
      if (this.state === 'spawning' && frame.type === 0x52 /* ready */) {
        this.state = 'ready'
        this.readyWaiter?.resolve()
        this.readyWaiter = null
      } else if (this.state === 'spawning' && frame.type === 0x46 /* failed */) {
        this.readyWaiter?.reject(new Error(`worker setup failed: ${frame.payload.toString('utf8').slice(0, 500)}`))
        this.readyWaiter = null
      } else if (this.handlers !== null) {
        this.handlers.frame(frame)
      } else if (this.state === 'ready') {
        this.early.push(frame)
      }
    }
  }

  private setFree (): void {
    this.state = 'free'
    this.owner.slotFreed(this)
  }

  private maybeClean (): void {
    if (this.state !== 'draining' || !this.exited || this.leased) return
    if (!this.decoder.isFenced || !this.outWatch.isFenced || !this.errWatch.isFenced) return
    this.state = 'cleaning'
    this.owner.cleanSlot(this).then(
      () => { if (this.state === 'cleaning') this.setFree() },
      () => { this.state = 'dead' }
    )
  }
}

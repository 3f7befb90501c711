import type { CgroupCounters, WorkerCgroup } from '../jail/cgroup.ts'
import type { ExitStatus, SlotLink } from './worker.ts'

/**
 * free: nothing in it. spawning: a worker is being forked and isolated. occupied: a worker lives in it
 * (warm, running or live). cleaning: the worker is gone and its cgroup is being emptied. dead: retired.
 */
export type SlotState = 'free' | 'spawning' | 'occupied' | 'cleaning' | 'dead'

/** What a slot needs from its zygote: the cgroup and signal operations on the worker inside it. */
export interface SlotOwner {
  killSlot (slot: Slot, reason: string): void
  interruptSlot (slot: Slot): void
  readSlotCounters (slot: Slot): Promise<CgroupCounters | null>
  countSlotProcesses (slot: Slot): Promise<number | null>
  cleanSlot (slot: Slot): Promise<void>
  /** the slot can take a new worker */
  slotFreed (slot: Slot): void
}

/**
 * One of a zygote's worker positions: an outside uid of its own and a cgroup kept between workers
 * (creating a memory cgroup per execution costs ~5 ms of CPU). It holds one worker at a time and is free
 * again once that worker's pid namespace is gone and its cgroup is empty. Links handed to a worker are
 * generation-checked: a late call of a finished worker never touches the next one.
 */
export class Slot {
  state: SlotState = 'free'
  generation = 0
  /** created on first use and kept for the slot's lifetime, reset between workers */
  cgroup: WorkerCgroup | null = null
  private exit: { promise: Promise<ExitStatus>, resolve: (status: ExitStatus) => void } = settledExit()
  private hasExited = true

  constructor (readonly index: number, private readonly owner: SlotOwner) {}

  get name (): string { return `s${this.index}` }

  /** A worker is being forked into this slot; the link is its handle on the slot. */
  begin (): SlotLink {
    this.state = 'spawning'
    this.generation++
    this.hasExited = false
    let settle: (status: ExitStatus) => void = () => {}
    const promise = new Promise<ExitStatus>((resolve) => { settle = resolve })
    this.exit = { promise, resolve: settle }
    const generation = this.generation
    const current = () => this.generation === generation && !this.hasExited
    return {
      kill: (reason) => { if (current()) this.owner.killSlot(this, reason) },
      interrupt: () => { if (current()) this.owner.interruptSlot(this) },
      readCounters: async () => this.generation === generation ? await this.owner.readSlotCounters(this) : null,
      survivors: async () => {
        await promise
        // the slot is not cleaned before the worker's owner looked: nothing has been killed yet
        return this.generation === generation ? await this.owner.countSlotProcesses(this) : null
      },
      exited: promise,
    }
  }

  /** The worker reported ready: it lives in the slot now. */
  occupied (): void {
    if (this.state === 'spawning') this.state = 'occupied'
  }

  /** The zygote reaped this slot's worker: its pid namespace is gone. Empty the cgroup, then free the slot. */
  onExited (status: ExitStatus): void {
    if (this.hasExited || this.state === 'dead') return
    this.hasExited = true
    this.state = 'cleaning'
    this.exit.resolve(status)
    this.owner.cleanSlot(this).then(
      () => { if (this.state === 'cleaning') { this.state = 'free'; this.owner.slotFreed(this) } },
      () => { this.state = 'dead' }
    )
  }

  /** Nothing was forked (the spawn was refused or never sent): free the slot once `cleanup` is done. */
  abandon (cleanup: Promise<void>): void {
    this.hasExited = true
    this.exit.resolve({ code: null, signal: null })
    this.state = 'cleaning'
    cleanup.then(
      () => { if (this.state === 'cleaning') { this.state = 'free'; this.owner.slotFreed(this) } },
      () => { this.state = 'dead' }
    )
  }

  /** The zygote itself is gone, and with it every worker. */
  onLost (): void {
    this.state = 'dead'
    this.hasExited = true
    this.exit.resolve({ code: null, signal: 9, jailLost: true })
  }
}

function settledExit (): { promise: Promise<ExitStatus>, resolve: (status: ExitStatus) => void } {
  return { promise: Promise.resolve({ code: null, signal: null }), resolve: () => {} }
}

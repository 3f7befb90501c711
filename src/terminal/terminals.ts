import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { sameOwner, type Identity } from '../auth/identity.ts'
import type { TerminalSettings } from '../config.ts'
import type { LiveWorkers } from '../live/registry.ts'
import { Commands } from './commands.ts'
import { INPUT_WINDOW_BYTES, TerminalError, TerminalJail, type TerminalJailDeps } from './terminal-jail.ts'

/** Output a shell may send ahead of what its WebSocket has written out: then it blocks on its own terminal. */
const PTY_OUTPUT_WINDOW_BYTES = 64 * 1024
/** Open Terminal's grace between SIGTERM and SIGKILL when a terminal's WebSocket closes (spec §2.3). */
const PTY_KILL_GRACE_MS = 3_000
const SWEEP_INTERVAL_MS = 5_000
const BASH = '/bin/bash'
const HUP = 1
const KILL = 9

/** Where a terminal's bytes go: the WebSocket that attached to it. */
export interface PtySink {
  send (chunk: Buffer, written: () => void): void
  end (): void
  /** stop or resume reading keystrokes (a paste larger than the shell takes in) */
  pause (paused: boolean): void
}

/** An interactive shell in a user's terminal jail (POST /api/terminals, then its WebSocket). */
export class Pty {
  readonly createdAt = new Date()
  private sink: PtySink | null = null
  private inFlight = 0
  private closed = false

  constructor (readonly id: string, readonly jail: TerminalJail, readonly channel: number, readonly pid: number, private readonly onClosed: (pty: Pty) => void) {}

  get isAttached (): boolean { return this.sink !== null }

  attach (sink: PtySink): void {
    this.sink = sink
    this.jail.notify('window', { channel: this.channel, bytes: PTY_OUTPUT_WINDOW_BYTES })
  }

  onBytes (chunk: Buffer): void {
    this.jail.touch()
    // credit comes back once the WebSocket wrote the chunk out: a client that reads nothing stops the shell
    this.sink?.send(chunk, () => this.jail.notify('window', { channel: this.channel, bytes: chunk.length }))
  }

  onConsumed (bytes: number): void {
    this.inFlight -= bytes
    if (this.inFlight <= INPUT_WINDOW_BYTES / 2) this.sink?.pause(false)
  }

  keystrokes (bytes: Buffer): void {
    this.jail.touch()
    this.inFlight += bytes.length
    if (this.inFlight > INPUT_WINDOW_BYTES) this.sink?.pause(true)
    this.jail.write(this.channel, bytes).catch(() => {})
  }

  resize (cols: number, rows: number): void {
    this.jail.request('resize', { proc: this.id, cols, rows }).catch(() => {})
  }

  /** The shell's session gets SIGHUP, then SIGKILL after a grace; the terminal is gone. */
  close (): void {
    if (this.closed) return
    this.closed = true
    this.sink?.end()
    this.sink = null
    this.onClosed(this)
    this.jail.request('signal', { proc: this.id, signal: HUP, scope: 'session' }).catch(() => {})
    setTimeout(() => {
      this.jail.request('signal', { proc: this.id, signal: KILL, scope: 'session' })
        .then(async () => await this.jail.request('forget', { proc: this.id }))
        .catch(() => {})
        .finally(() => this.jail.closeChannel(this.channel))
    }, PTY_KILL_GRACE_MS).unref()
  }

  end (): void {
    this.sink?.end()
    this.sink = null
  }
}

interface Entry { jail: TerminalJail, commands: Commands, ptys: Set<Pty> }

/**
 * The terminal jails of a server, one per Open WebUI user (and per chat, if so configured): found by owner
 * and key, started on first use, ended when idle. The scale-out router can treat a jail as the live object
 * of kind `terminal` whose id is `routingId(owner, key)`.
 */
export class Terminals {
  private readonly entries = new Map<string, Promise<Entry>>()
  private readonly ptys = new Map<string, Pty>()
  private readonly sweeper: NodeJS.Timeout

  constructor (private readonly live: LiveWorkers, private readonly settings: TerminalSettings, private readonly deps: TerminalJailDeps, private readonly log: Logger) {
    this.sweeper = setInterval(() => this.sweep(Date.now()), SWEEP_INTERVAL_MS)
    this.sweeper.unref()
  }

  /** The key of a user's terminal: the chat too when each chat has a terminal of its own. */
  routingId (owner: Identity, chat: string | null): string {
    return JSON.stringify([owner.tenant, owner.user ?? '', this.settings.perChat ? chat ?? '' : ''])
  }

  /** The owner's terminal for this chat, started (its home restored) if it is not running. */
  async jailFor (owner: Identity, chat: string | null): Promise<{ jail: TerminalJail, commands: Commands }> {
    const key = this.routingId(owner, chat)
    let entry = this.entries.get(key)
    if (entry !== undefined) {
      const current = await entry.catch(() => null)
      if (current !== null && current.jail.isAlive) return current
      if (this.entries.get(key) === entry) this.entries.delete(key)
    }
    entry = this.start(owner, key)
    this.entries.set(key, entry)
    entry.catch(() => { if (this.entries.get(key) === entry) this.entries.delete(key) })
    return await entry
  }

  async openPty (owner: Identity, chat: string | null, size: { cols: number, rows: number } = { cols: 80, rows: 24 }): Promise<Pty> {
    const entry = await this.entry(owner, chat)
    if (entry.ptys.size >= this.settings.maxPtysPerTerminal) throw new TerminalError(429, `This terminal already has ${entry.ptys.size} shells open; close one first.`)
    let pty: Pty | null = null
    const channel = entry.jail.openChannel({ onBytes: (chunk) => pty?.onBytes(chunk), onEof: () => pty?.end(), onConsumed: (bytes) => pty?.onConsumed(bytes) })
    const proc = randomUUID()
    const spawned = await entry.jail.request<{ pid: number }>('spawn', {
      proc, channel, argv: [BASH, '-i'], logged: false, window: 0, label: 'terminal', cols: size.cols, rows: size.rows,
    })
    pty = new Pty(proc, entry.jail, channel, spawned.pid, (closed) => { this.ptys.delete(closed.id); entry.ptys.delete(closed) })
    entry.ptys.add(pty)
    this.ptys.set(pty.id, pty)
    return pty
  }

  /** A terminal's shell by id; another owner's does not exist. `owner.user` null: any user of the tenant. */
  pty (id: string, owner: Identity): Pty | null {
    const pty = this.ptys.get(id)
    if (pty === undefined || !pty.jail.isAlive) return null
    const mine = owner.user === null ? pty.jail.owner.tenant === owner.tenant : sameOwner(pty.jail.owner, owner)
    return mine ? pty : null
  }

  ptysOf (owner: Identity): Pty[] {
    return [...this.ptys.values()].filter((pty) => sameOwner(pty.jail.owner, owner) && pty.jail.isAlive)
  }

  stats (): { terminals: number, ptys: number } {
    return { terminals: this.entries.size, ptys: this.ptys.size }
  }

  /** Ends the owner's terminal now (its home saved first): what it ran ends with it. */
  async end (owner: Identity, chat: string | null): Promise<boolean> {
    const key = this.routingId(owner, chat)
    const entry = await this.entries.get(key)?.catch(() => null)
    if (entry === undefined || entry === null) return false
    this.entries.delete(key)
    await this.endEntry(entry, 'stopped')
    return true
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
    const entries = await Promise.all([...this.entries.values()].map(async (entry) => await entry.catch(() => null)))
    this.entries.clear()
    await Promise.all(entries.map(async (entry) => entry === null ? undefined : await this.endEntry(entry, 'shutdown')))
  }

  private async entry (owner: Identity, chat: string | null): Promise<Entry> {
    await this.jailFor(owner, chat)
    const entry = await this.entries.get(this.routingId(owner, chat))
    if (entry === undefined) throw new TerminalError(503, 'The terminal could not be started.')
    return entry
  }

  private async start (owner: Identity, key: string): Promise<Entry> {
    const live = await this.live.create(owner, 'terminal', { max: this.settings.max, maxPerUser: this.settings.maxPerUser })
    try {
      const jail = await TerminalJail.start(owner, `terminal:${key}`, live, this.deps)
      const entry: Entry = { jail, commands: new Commands(jail, () => { jail.checkpoint().catch((error: Error) => this.log.warn({ err: error }, 'terminal home not saved')) }), ptys: new Set() }
      live.onEnd(() => {
        for (const pty of entry.ptys) pty.close()
        entry.ptys.clear()
      })
      this.log.info({ live: live.id, workspace: jail.workspaceId }, 'terminal started')
      return entry
    } catch (error) {
      live.end('stopped')
      throw error
    }
  }

  private async endEntry (entry: Entry, reason: 'stopped' | 'expired' | 'shutdown'): Promise<void> {
    for (const pty of entry.ptys) pty.close()
    await entry.jail.close(reason)
  }

  /** Terminals nobody used for the idle timeout, and with no shell attached, end (their home saved). */
  private sweep (now: number): void {
    for (const [key, pending] of this.entries) {
      pending.then((entry) => {
        const attached = [...entry.ptys].some((pty) => pty.isAttached)
        if (attached || now - entry.jail.lastUsedAt < this.settings.idleTimeoutMs || this.entries.get(key) !== pending) return
        this.entries.delete(key)
        this.log.info({ workspace: entry.jail.workspaceId }, 'terminal idle, ended')
        this.endEntry(entry, 'expired').catch(() => {})
      }, () => {})
    }
  }
}

import { formatBytes } from '../units.ts'
import { newProcessId, TerminalError, type TerminalJail } from './terminal-jail.ts'

/** A command's answer in Open Terminal's shape (spec §2.1 `run_command`, §2.2). */
export interface CommandStatus {
  id: string
  command: string
  status: 'running' | 'done' | 'killed'
  exit_code: number | null
  output: Array<{ type: 'output', data: string }>
  truncated: boolean
  next_offset: number
  log_path: null
}

export interface CommandRequest {
  command: string
  cwd?: string
  env?: Record<string, string>
  /** how long this call waits for the command, ms */
  waitMs: number
  /** the command's wall-clock limit, ms: then its whole session is killed */
  timeoutMs: number
  tail?: number
}

interface StatusReply { status: 'running' | 'done' | 'killed', exit_code: number | null, output: string[], truncated: boolean, next_offset: number }

const BASH = '/bin/bash'
const KILL = 9
const TERM = 15

/**
 * Commands of one terminal jail, as Open Terminal's run_command family sees them: started on a terminal
 * of their own (stdout and stderr merged, as there), their output kept in the jail and read by offset,
 * each stopped at its time limit with its whole session (what it put in the background included).
 */
export class Commands {
  private readonly labels = new Map<string, string>()
  private readonly timers = new Map<string, NodeJS.Timeout>()
  private readonly channels = new Map<string, number>()

  constructor (private readonly jail: TerminalJail, private readonly onExit: () => void) {}

  async run (request: CommandRequest): Promise<CommandStatus> {
    const id = newProcessId()
    const channel = this.jail.openChannel({ onBytes: () => {}, onEof: () => {} })
    await this.jail.request('spawn', {
      proc: id,
      channel,
      argv: [BASH, '-c', request.command],
      cwd: request.cwd,
      env: request.env ?? {},
      logged: true,
      label: request.command,
      cpu_seconds: Math.ceil(request.timeoutMs / 1000) + 1,
    })
    this.labels.set(id, request.command)
    this.channels.set(id, channel)
    const seconds = request.timeoutMs / 1000
    this.timers.set(id, setTimeout(() => {
      this.timers.delete(id)
      this.jail.request('signal', { proc: id, signal: KILL, scope: 'session', note: `Command exceeded the time limit of ${seconds} s and was stopped.` }).catch(() => {})
    }, request.timeoutMs))
    this.jail.untilExit(id, request.timeoutMs + 60_000).then(() => this.exited(id), () => {})
    return await this.status(id, { waitMs: request.waitMs, offset: 0, tail: request.tail })
  }

  async status (id: string, options: { waitMs: number, offset: number, tail?: number }): Promise<CommandStatus> {
    const label = this.labels.get(id)
    if (label === undefined) throw new TerminalError(404, 'Process not found')
    await this.jail.untilExit(id, options.waitMs)
    const reply = await this.jail.request<StatusReply>('status', { proc: id, offset: options.offset, tail: options.tail ?? null })
    return {
      id,
      command: label,
      status: reply.status,
      exit_code: reply.exit_code,
      output: reply.output.map((data) => ({ type: 'output' as const, data })),
      truncated: reply.truncated,
      next_offset: reply.next_offset,
      log_path: null,
    }
  }

  async list (): Promise<Array<Omit<CommandStatus, 'output' | 'truncated' | 'next_offset'>>> {
    const listed = await this.jail.request<Array<{ proc: string, status: CommandStatus['status'], exit_code: number | null }>>('processes')
    return listed.filter((item) => this.labels.has(item.proc)).map((item) => ({
      id: item.proc, command: this.labels.get(item.proc) ?? '', status: item.status, exit_code: item.exit_code, log_path: null,
    }))
  }

  /** Keystrokes for a running command; Open Terminal decodes `\n`, `\x03` and the like first (spec §2.1). */
  async input (id: string, text: string): Promise<void> {
    if (!this.labels.has(id)) throw new TerminalError(404, 'Process not found')
    const reply = await this.jail.request<{ status: string }>('status', { proc: id, offset: Number.MAX_SAFE_INTEGER, tail: null })
    if (reply.status !== 'running') throw new TerminalError(400, 'Process has already exited')
    const bytes = Buffer.from(decodeEscapes(text), 'utf8')
    if (bytes.length > 1024 * 1024) throw new TerminalError(400, `Input over ${formatBytes(1024 * 1024)}; write it to a file instead.`)
    await this.jail.write(this.channelOf(id), bytes)
  }

  async kill (id: string, force: boolean): Promise<void> {
    if (!this.labels.has(id)) throw new TerminalError(404, 'Process not found')
    await this.jail.request('signal', { proc: id, signal: force ? KILL : TERM, scope: 'group' })
  }

  private channelOf (id: string): number {
    return this.channels.get(id) ?? 0
  }

  private exited (id: string): void {
    clearTimeout(this.timers.get(id))
    this.timers.delete(id)
    this.onExit()
  }
}

/** `\n`, `\t`, `\r`, `\\`, `\xNN`, `\uNNNN` and octal `\NNN` as their characters, the rest as written. */
export function decodeEscapes (text: string): string {
  return text.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[0-7]{1,3}|[nrtabfv\\'"e])/g, (_match, code: string) => {
    if (code.startsWith('x') || code.startsWith('u')) return String.fromCharCode(Number.parseInt(code.slice(1), 16))
    if (/^[0-7]/.test(code)) return String.fromCharCode(Number.parseInt(code, 8))
    const simple: Record<string, string> = { n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b', f: '\f', v: '\v', e: '\x1b', '\\': '\\', "'": "'", '"': '"' }
    return simple[code] ?? code
  })
}

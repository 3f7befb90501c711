import { chmod, chown, mkdir, rm } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { randomBytesFromPool } from './random-pool.ts'

/** A worker's own connections to the server: nothing else, no earlier or later worker, holds them. */
export interface WorkerSockets { control: net.Socket, stdout: net.Socket, stderr: net.Socket }

const TOKEN_BYTES = 16
const KINDS = { C: 'control', O: 'stdout', E: 'stderr' } as const
const HELLO_BYTES = TOKEN_BYTES + 1
/** a connection that does not name itself in time is dropped */
const HELLO_TIMEOUT_MS = 5_000

interface PendingHello { socket: net.Socket, deadline: number }

interface Expected {
  sockets: Partial<WorkerSockets>
  resolve: (sockets: WorkerSockets) => void
}

/**
 * The listener a zygote's workers connect to, one per zygote (sandbox/channel.py). Its socket lives in a
 * directory bound into that zygote's jail only, owned by the zygote's outside uid: no other jail and no
 * other host user can connect. A worker names itself with the per-spawn token the server gave its
 * zygote; a connection with an unknown token, a second one of the same kind, or no hello in time is closed.
 */
export class ChannelListener {
  private readonly expected = new Map<string, Expected>()
  private readonly pendingHellos = new Set<PendingHello>()
  private readonly helloSweep: NodeJS.Timeout

  private constructor (private readonly server: net.Server, readonly directory: string) {
    // one sweep drops connections that never named themselves, instead of a timer per connection
    this.helloSweep = setInterval(() => {
      const now = Date.now()
      for (const pending of this.pendingHellos) {
        if (pending.deadline <= now) {
          this.pendingHellos.delete(pending)
          pending.socket.destroy()
        }
      }
    }, HELLO_TIMEOUT_MS / 5)
    this.helloSweep.unref()
  }

  /**
   * Listen at `<directory>/sock`; the socket file is handed to `ownerUid` (mode 0600). The directory stays
   * root's (0711): the server can remove the socket again without CAP_DAC_OVERRIDE (the documented
   * container drops it).
   */
  static async open (directory: string, ownerUid: number): Promise<ChannelListener> {
    await rm(directory, { recursive: true, force: true })
    await mkdir(directory, { recursive: true, mode: 0o711 })
    await chmod(directory, 0o711)
    const socketPath = path.join(directory, 'sock')
    const server = net.createServer()
    const listener = new ChannelListener(server, directory)
    server.on('connection', (socket) => listener.accept(socket))
    server.on('error', () => {}) // a listener error ends nothing already connected; spawns then time out
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(socketPath, () => { server.off('error', reject); resolve() })
    })
    // mode first, while the socket is still root's: changing the mode of a file one does not own needs
    // CAP_FOWNER, which the documented container drops
    await chmod(socketPath, 0o600)
    await chown(socketPath, ownerUid, ownerUid)
    return listener
  }

  /** A fresh token and the promise of the three connections that will present it. */
  expect (): { token: string, sockets: Promise<WorkerSockets>, cancel: () => void } {
    const token = randomBytesFromPool(TOKEN_BYTES).toString('hex')
    const sockets = new Promise<WorkerSockets>((resolve) => {
      this.expected.set(token, { sockets: {}, resolve })
    })
    const cancel = () => {
      const entry = this.expected.get(token)
      this.expected.delete(token)
      for (const socket of Object.values(entry?.sockets ?? {})) socket?.destroy()
    }
    return { token, sockets, cancel }
  }

  async close (): Promise<void> {
    for (const token of [...this.expected.keys()]) {
      for (const socket of Object.values(this.expected.get(token)?.sockets ?? {})) socket?.destroy()
    }
    this.expected.clear()
    clearInterval(this.helloSweep)
    for (const pending of this.pendingHellos) pending.socket.destroy()
    this.pendingHellos.clear()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
    await rm(this.directory, { recursive: true, force: true })
  }

  private accept (socket: net.Socket): void {
    socket.on('error', () => {})
    const pending: PendingHello = { socket, deadline: Date.now() + HELLO_TIMEOUT_MS }
    this.pendingHellos.add(pending)
    let hello: Buffer = Buffer.alloc(0)
    const onData = (chunk: Buffer) => {
      hello = hello.length === 0 ? chunk : Buffer.concat([hello, chunk])
      if (hello.length < HELLO_BYTES) return
      this.pendingHellos.delete(pending)
      socket.off('data', onData)
      socket.pause()
      this.attach(socket, hello.subarray(0, TOKEN_BYTES).toString('hex'), String.fromCharCode(hello[TOKEN_BYTES] ?? 0), hello.subarray(HELLO_BYTES))
    }
    socket.on('data', onData)
    socket.once('close', () => this.pendingHellos.delete(pending))
  }

  private attach (socket: net.Socket, token: string, kindCode: string, rest: Buffer): void {
    const entry = this.expected.get(token)
    const kind = KINDS[kindCode as keyof typeof KINDS]
    if (entry === undefined || kind === undefined || entry.sockets[kind] !== undefined) {
      socket.destroy()
      return
    }
    // bytes that came with the hello (a quick worker's first frame) are read again by the new owner
    if (rest.length > 0) socket.unshift(rest)
    entry.sockets[kind] = socket
    const { control, stdout, stderr } = entry.sockets
    if (control !== undefined && stdout !== undefined && stderr !== undefined) {
      this.expected.delete(token)
      entry.resolve({ control, stdout, stderr })
    }
  }
}

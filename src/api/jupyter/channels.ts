import { randomUUID } from 'node:crypto'
import type { WebSocket } from 'ws'
import type { Identity } from '../../auth/identity.ts'
import type { CellOutput, Kernel, KernelManager } from '../../live/kernels.ts'
import type { Metrics } from '../../metrics.ts'
import { decodeMessage, encodeLegacy, encodeV1, MessageError, PROTOCOL_VERSION, reply, V1_SUBPROTOCOL, type Header, type JupyterMessage } from './messages.ts'

/** Open WebUI's client drops every output of a run after a message over 1 MiB: stay well below. */
const MAX_MESSAGE_BYTES = 1_000_000
/**
 * What may wait in one connection's send buffer for a client that does not read. Every cell's output is
 * capped, but cells are many and iopub goes to every connection of the kernel: without this bound a client
 * that never reads makes the server hold all of it (found: 12 cells of 8 MiB, all buffered). Past it the
 * connection is cut (a close frame would wait behind the same buffer); the kernel and its cells go on.
 */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024
/** WebSockets open on one kernel: JupyterLab opens one or two; every one more multiplies each iopub message. */
export const MAX_CONNECTIONS_PER_KERNEL = 8
/** The close code when a kernel already has MAX_CONNECTIONS_PER_KERNEL connections (RFC 6455 §7.4.1 "try again later"). */
export const CLOSE_TOO_MANY_CONNECTIONS = 1013
/** The close code when the kernel is shut down or culled: its sockets never outlive it (RFC 6455 "going away"). */
export const CLOSE_KERNEL_GONE = 1001
/** After the last connection closes, how long before a running cell is stopped (a reconnect keeps it). */
const DISCONNECT_GRACE_MS = 10_000

const KERNEL_INFO = {
  status: 'ok',
  protocol_version: PROTOCOL_VERSION,
  implementation: 'warden',
  implementation_version: '0.1.0',
  language_info: { name: 'python', version: '3', mimetype: 'text/x-python', file_extension: '.py', pygments_lexer: 'ipython3', codemirror_mode: { name: 'ipython', version: 3 } },
  banner: 'Warden: a jailed Python kernel (no network; files live in /mnt/data)',
  help_links: [],
}

/** Minimal answers to requests a kernel does not really serve, so that clients never wait for them. */
const MINIMAL_REPLIES: Record<string, (content: Record<string, unknown>) => Record<string, unknown>> = {
  comm_info_request: () => ({ status: 'ok', comms: {} }),
  is_complete_request: () => ({ status: 'unknown' }),
  complete_request: (content) => ({ status: 'ok', matches: [], cursor_start: content.cursor_pos ?? 0, cursor_end: content.cursor_pos ?? 0, metadata: {} }),
  inspect_request: () => ({ status: 'ok', found: false, data: {}, metadata: {} }),
  history_request: () => ({ status: 'ok', history: [] }),
}

const connectionsByKernel = new Map<string, Set<(message: JupyterMessage) => void>>()
const disconnectTimers = new Map<string, NodeJS.Timeout>()

/**
 * One WebSocket on a kernel's channels: requests in, replies and iopub out, in the framing the client
 * chose. iopub goes to every connection of the kernel (as in Jupyter); replies to the asker.
 */
export function openChannels (socket: WebSocket, kernel: Kernel, kernels: KernelManager, owner: Identity, metrics: Metrics): void {
  const binary = socket.protocol === V1_SUBPROTOCOL
  const session = randomUUID().replaceAll('-', '')
  const send = (message: JupyterMessage) => {
    for (const piece of fitToSize(message)) {
      if (socket.readyState !== socket.OPEN) return
      if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        socket.terminate()
        return
      }
      socket.send(binary ? encodeV1(piece) : encodeLegacy(piece))
    }
  }
  if (kernel.connections >= MAX_CONNECTIONS_PER_KERNEL) {
    // the route refuses these before the upgrade; this is the race of several upgrades at once
    socket.close(CLOSE_TOO_MANY_CONNECTIONS, 'too many connections to this kernel')
    return
  }
  const listeners = connectionsByKernel.get(kernel.id) ?? new Set()
  connectionsByKernel.set(kernel.id, listeners)
  listeners.add(send)
  kernel.connections++
  clearTimeout(disconnectTimers.get(kernel.id))
  const broadcast = (message: JupyterMessage) => { for (const listener of connectionsByKernel.get(kernel.id) ?? [send]) listener(message) }
  const status = (state: string, parent: Header) => broadcast(reply(session, 'iopub', 'status', { execution_state: state }, parent))

  socket.on('message', (data: Buffer, isBinary: boolean) => {
    let message: JupyterMessage
    try {
      message = decodeMessage(data, isBinary)
    } catch (error) {
      socket.close(1003, error instanceof MessageError ? error.message.slice(0, 120) : 'unreadable message')
      return
    }
    kernel.lastActivity = new Date()
    handle(message).catch(() => socket.close(1011, 'the kernel failed'))
  })
  // after the current message's handler: a shutdown_request still gets its reply and idle
  const stopWatching = kernel.onShutdown(() => setImmediate(() => socket.close(CLOSE_KERNEL_GONE, 'kernel shut down')))
  socket.on('close', () => {
    stopWatching()
    listeners.delete(send)
    kernel.connections = Math.max(0, kernel.connections - 1)
    if (listeners.size === 0) {
      connectionsByKernel.delete(kernel.id)
      // nobody is listening any more: after a grace for reconnects, the running cell is stopped
      disconnectTimers.set(kernel.id, setTimeout(() => {
        disconnectTimers.delete(kernel.id)
        if (kernel.connections === 0) kernel.stopWork()
      }, DISCONNECT_GRACE_MS).unref())
    }
  })

  async function handle (message: JupyterMessage): Promise<void> {
    const type = message.header.msg_type
    const parent = message.header
    if (type === 'execute_request') return await execute(message)
    if (type === 'interrupt_request') {
      kernel.interrupt()
      send(reply(session, 'control', 'interrupt_reply', { status: 'ok' }, parent))
      return
    }
    if (type === 'shutdown_request') {
      const restart = message.content.restart === true
      status('busy', parent)
      if (restart) await kernel.restart()
      else kernels.delete(kernel.id, owner)
      send(reply(session, message.channel === 'control' ? 'control' : 'shell', 'shutdown_reply', { status: 'ok', restart }, parent))
      status('idle', parent)
      return
    }
    if (!type.endsWith('_request')) return // replies from the client (input_reply, comm messages): nothing to do
    status('busy', parent)
    const content = type === 'kernel_info_request' ? KERNEL_INFO : (MINIMAL_REPLIES[type] ?? (() => ({ status: 'ok' })))(message.content)
    send(reply(session, message.channel === 'control' ? 'control' : 'shell', type.replace(/_request$/, '_reply'), content, parent))
    status('idle', parent)
  }

  async function execute (message: JupyterMessage): Promise<void> {
    const parent = message.header
    const code = typeof message.content.code === 'string' ? message.content.code : ''
    const silent = message.content.silent === true
    status('busy', parent)
    const started = performance.now()
    let executionCount = 0
    const cell = kernel.execute(code, (output) => {
      if (!silent || output.type === 'error') broadcast(outputMessage(session, output, parent, executionCount))
    }, (count) => {
      executionCount = count
      if (!silent) broadcast(reply(session, 'iopub', 'execute_input', { code, execution_count: count }, parent))
    })
    let content: Record<string, unknown>
    try {
      const result = await cell
      content = result.status === 'ok'
        ? { status: 'ok', execution_count: result.executionCount, user_expressions: {}, payload: [] }
        : { status: 'error', execution_count: result.executionCount, ename: result.ename, evalue: result.evalue, traceback: result.traceback }
      metrics.recordCell(result.status === 'ok' ? 'ok' : result.ename === 'LimitExceeded' || result.ename === 'KernelBusy' ? 'limit' : result.ename === 'KernelDied' || result.ename === 'MemoryError' ? 'died' : 'error', performance.now() - started)
    } catch (error) {
      const evalue = (error as Error).message
      broadcast(reply(session, 'iopub', 'error', { ename: 'KernelUnavailable', evalue, traceback: [`KernelUnavailable: ${evalue}`] }, parent))
      content = { status: 'error', execution_count: kernel.executionCount, ename: 'KernelUnavailable', evalue, traceback: [`KernelUnavailable: ${evalue}`] }
      metrics.recordCell('unavailable', performance.now() - started)
    }
    send(reply(session, 'shell', 'execute_reply', content, parent, { status: content.status }))
    // idle last: Open WebUI stops reading at the first idle of its request
    status('idle', parent)
  }
}

function outputMessage (session: string, output: CellOutput, parent: Header, executionCount: number): JupyterMessage {
  switch (output.type) {
    case 'stream':
      return reply(session, 'iopub', 'stream', { name: output.name, text: output.text }, parent)
    case 'display_data':
      return reply(session, 'iopub', 'display_data', { data: output.data, metadata: output.metadata, transient: {} }, parent)
    case 'execute_result':
      return reply(session, 'iopub', 'execute_result', { data: output.data, metadata: output.metadata, execution_count: executionCount }, parent)
    case 'error':
      return reply(session, 'iopub', 'error', { ename: output.ename, evalue: output.evalue, traceback: output.traceback }, parent)
  }
}

/**
 * Keep every message under MAX_MESSAGE_BYTES as sent: a stream is split in halves until each fits; any
 * other output that does not fit is replaced by a text note saying so.
 */
function fitToSize (message: JupyterMessage): JupyterMessage[] {
  if (encodeLegacy(message).length <= MAX_MESSAGE_BYTES) return [message]
  const { content } = message
  if (message.header.msg_type === 'stream' && typeof content.text === 'string' && content.text.length > 1) {
    const middle = Math.ceil(content.text.length / 2)
    return [content.text.slice(0, middle), content.text.slice(middle)].flatMap((text) =>
      fitToSize({ ...message, header: { ...message.header, msg_id: randomUUID().replaceAll('-', '') }, content: { ...content, text } }))
  }
  const note = `[output of ${encodeLegacy(message).length} bytes not shown: a message may carry at most ${MAX_MESSAGE_BYTES}]`
  if ('data' in content) return [{ ...message, content: { ...content, data: { 'text/plain': note } } }]
  if ('traceback' in content) return [{ ...message, content: { ...content, evalue: note, traceback: [note] } }]
  return [{ ...message, content: { note } }]
}

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { before, beforeEach, describe } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket from 'ws'
import { availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'
import { ATTACK_ENV, assertStillServing, hostProcessesOfJail, rssBytes, serverPid, type Json } from './helpers.ts'
import { assertSettled, health } from './settled.ts'

/**
 * Attackers with Jupyter kernels of their own (Open WebUI's and JupyterLab's path): through the real
 * routes and the real WebSocket, in both framings. Floods, oversized and malformed frames, a client that
 * never reads, other owners' kernel ids, tokens in the query and in the header, restarts mid-cell and
 * detached children. Beside them a neighbour's kernel (another token) answers exactly its own output.
 */

const ATTACKER = 'attacker-key-0123456789abcdef'
const OTHER_KEY = 'other-key-0123456789abcdef'
const NEIGHBOUR = 'neighbour-token-0123456789abcdef'
const PER_USER = 3
/** a cell may print this much before it is stopped: large, so that a client that never reads could cost the server a lot */
const CELL_OUTPUT_BYTES = 8 * 1024 * 1024
const V1 = 'v1.kernel.websocket.jupyter.org'
/** the server's V8 heap in this suite: below the 400 MiB of code the execute_request flood sends */
const SERVER_HEAP_MB = 384

type Framing = 'v1' | 'legacy'

interface Received { channel: string, header: Json, parent_header: Json, content: Json, msg_type?: string }

function encodeV1 (parts: Array<string | Buffer>): Buffer {
  const bytes = parts.map((part) => Buffer.isBuffer(part) ? part : Buffer.from(part))
  const count = bytes.length
  const head = Buffer.alloc(8 * (count + 1))
  head.writeBigUInt64LE(BigInt(count), 0)
  let offset = head.length
  bytes.forEach((part, index) => {
    head.writeBigUInt64LE(BigInt(offset), 8 * (index + 1))
    offset += part.length
  })
  return Buffer.concat([head, ...bytes])
}

function decodeV1 (data: Buffer): Received {
  const count = Number(data.readBigUInt64LE(0))
  const offsets = Array.from({ length: count }, (_, index) => Number(data.readBigUInt64LE(8 * (index + 1))))
  const part = (index: number) => data.subarray(offsets[index], index + 1 < count ? offsets[index + 1] : data.length).toString('utf8')
  return { channel: part(0), header: JSON.parse(part(1)), parent_header: JSON.parse(part(2)), content: JSON.parse(part(4)) }
}

function request (msgType: string, content: Json, channel = 'shell'): { channel: string, header: Json, parent_header: Json, metadata: Json, content: Json } {
  return {
    channel,
    header: { msg_id: randomUUID().replaceAll('-', ''), msg_type: msgType, username: 'attacker', session: randomUUID().replaceAll('-', ''), date: '', version: '5.3' },
    parent_header: {},
    metadata: {},
    content,
  }
}

function frameOf (message: ReturnType<typeof request>, framing: Framing): Buffer | string {
  if (framing === 'legacy') return JSON.stringify(message)
  return encodeV1([message.channel, JSON.stringify(message.header), JSON.stringify(message.parent_header), JSON.stringify(message.metadata), JSON.stringify(message.content)])
}

interface CellResult { stdout: string, stderr: string, errors: Json[], reply: Json, idleAfterReply: boolean }

/** One WebSocket on a kernel's channels, in the framing asked for, with the token where it is asked for. */
class Channels {
  readonly received: Received[] = []
  private readonly waiters = new Set<() => void>()
  readonly sent = new Set<string>()
  closeCode: number | null = null

  /** a socket opened elsewhere, legacy framing */
  static wrap (socket: WebSocket): Channels { return new Channels(socket, 'legacy') }

  private constructor (readonly socket: WebSocket, readonly framing: Framing) {
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      this.received.push(isBinary ? decodeV1(data) : JSON.parse(String(data)) as Received)
      for (const waiter of this.waiters) waiter()
    })
    socket.on('close', (code) => {
      this.closeCode = code
      for (const waiter of this.waiters) waiter()
    })
    socket.on('error', () => {})
  }

  static async open (server: RunningServer, kernelId: string, token: string, framing: Framing = 'legacy', tokenIn: 'query' | 'header' = 'query'): Promise<Channels> {
    const query = tokenIn === 'query' ? `?token=${token}` : ''
    const headers = tokenIn === 'header' ? { authorization: `token ${token}` } : {}
    const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/api/kernels/${kernelId}/channels${query}`, framing === 'v1' ? [V1] : [], { headers })
    await new Promise<void>((resolve, reject) => {
      socket.once('open', resolve)
      socket.once('error', reject)
      socket.once('unexpected-response', (_request, response) => reject(new Error(`upgrade answered ${response.statusCode}`)))
    })
    assert.equal(socket.protocol, framing === 'v1' ? V1 : '')
    return new Channels(socket, framing)
  }

  send (message: ReturnType<typeof request>): string {
    this.socket.send(frameOf(message, this.framing))
    this.sent.add(message.header.msg_id as string)
    return message.header.msg_id as string
  }

  /** Resolves when `done` holds for what was received, or the socket closed; rejects after `timeoutMs` (a hang). */
  async until (done: () => boolean, timeoutMs = 60_000): Promise<void> {
    if (done() || this.closeCode !== null) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiters.delete(check); reject(new Error('no answer: the server hung')) }, timeoutMs)
      const check = () => {
        if (!done() && this.closeCode === null) return
        clearTimeout(timer)
        this.waiters.delete(check)
        resolve()
      }
      this.waiters.add(check)
    })
  }

  async closed (): Promise<number> {
    await this.until(() => false)
    return this.closeCode as number
  }

  /** Run a cell and collect its outputs until the idle of its request (as Open WebUI stops). */
  async execute (code: string): Promise<CellResult> {
    const msgId = this.send(request('execute_request', { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true }))
    return await this.resultOf(msgId)
  }

  async resultOf (msgId: string): Promise<CellResult> {
    const mine = () => this.received.filter((message) => message.parent_header?.msg_id === msgId)
    const isIdle = (message: Received) => message.header.msg_type === 'status' && message.content.execution_state === 'idle'
    await this.until(() => mine().some(isIdle))
    const messages = mine()
    assert.ok(messages.some(isIdle), `no idle for ${msgId}; the socket closed with ${this.closeCode}`)
    const of = (type: string) => messages.filter((message) => message.header.msg_type === type)
    const stream = (name: string) => of('stream').filter((message) => message.content.name === name).map((message) => message.content.text as string).join('')
    const reply = of('execute_reply')[0]
    assert.ok(reply !== undefined, `no execute_reply for ${msgId}`)
    return {
      stdout: stream('stdout'),
      stderr: stream('stderr'),
      errors: of('error').map((message) => message.content),
      reply: reply.content,
      idleAfterReply: messages.findIndex(isIdle) > messages.indexOf(reply) || messages.indexOf(reply) === -1,
    }
  }

  close (): void { this.socket.close() }
}

for (const driver of availableDrivers()) {
  describe(`Jupyter attackers (${driver})`, () => {
    let server: RunningServer
    let neighbourKernel: string
    let neighbour: Channels
    const secret = `neighbour-${randomUUID()}`
    const suite = suiteContext()

    const rest = async (method: string, route: string, token: string | null, init: { headers?: Record<string, string>, query?: string } = {}): Promise<{ status: number, body: Json | null }> => {
      const query = init.query ?? (token === null ? '' : `?token=${token}`)
      const response = await fetch(`${server.baseUrl}${route}${query}`, { method, headers: { 'content-type': 'application/json', ...init.headers }, body: method === 'POST' ? '{}' : undefined })
      const text = await response.text()
      return { status: response.status, body: text === '' ? null : JSON.parse(text) as Json }
    }
    const newKernel = async (token: string): Promise<string> => {
      const created = await rest('POST', '/api/kernels', token)
      assert.equal(created.status, 201, JSON.stringify(created.body))
      return (created.body as Json).id as string
    }
    const deleteKernel = async (token: string, id: string) => {
      const deleted = await rest('DELETE', `/api/kernels/${id}`, token)
      assert.equal(deleted.status, 204, JSON.stringify(deleted.body))
    }
    /** the neighbour's kernel still holds its state and answers exactly its own output */
    const assertNeighbourExact = async () => {
      const result = await neighbour.execute('print(secret)')
      assert.equal(result.stdout, `${secret}\n`, JSON.stringify(result))
      assert.equal(result.stderr, '')
      assert.equal(result.reply.status, 'ok')
      const foreign = neighbour.received.filter((message) => !neighbour.sent.has(String(message.parent_header?.msg_id)))
      assert.deepEqual(foreign, [], 'the neighbour received messages it never asked for')
    }
    /** a fresh kernel of the attacker: a new channel runs a cell correctly */
    const assertKernelServes = async (id: string, token = ATTACKER) => {
      const channels = await Channels.open(server, id, token)
      const result = await channels.execute('print(6*7)')
      channels.close()
      assert.equal(result.stdout, '42\n', JSON.stringify(result))
      assert.equal(result.reply.status, 'ok')
    }

    // a test that failed half-way leaves its kernels: the next one starts from none (the per-user cap is small)
    beforeEach(async () => {
      for (const token of [ATTACKER, OTHER_KEY]) {
        for (const kernel of (await rest('GET', '/api/kernels', token)).body as Json[]) await rest('DELETE', `/api/kernels/${kernel.id}`, token)
      }
    })

    before(async () => {
      server = await startServer(suite, {
        driver,
        apiKey: ATTACKER,
        env: {
          ...ATTACK_ENV,
          CODE_API_KEY: `${ATTACKER},${OTHER_KEY}`,
          JUPYTER_TOKEN: NEIGHBOUR,
          MAX_KERNELS_PER_USER: String(PER_USER),
          MAX_STDOUT_BYTES: String(CELL_OUTPUT_BYTES),
          MAX_STDERR_BYTES: String(CELL_OUTPUT_BYTES),
          // a heap smaller than one flood: whatever the server keeps of it must fit, garbage must be collectable
          NODE_OPTIONS: `--max-old-space-size=${SERVER_HEAP_MB}`,
        },
      })
      neighbourKernel = await newKernel(NEIGHBOUR)
      neighbour = await Channels.open(server, neighbourKernel, NEIGHBOUR, 'v1')
      const set = await neighbour.execute(`secret = ${JSON.stringify(secret)}`)
      assert.equal(set.reply.status, 'ok')
      await assertNeighbourExact()
    })

    it('another user\'s and another API key\'s kernel id is the 404 of a kernel that never existed, on REST and the WebSocket', async () => {
      const never = randomUUID()
      const answers = async (token: string, id: string) => {
        const routes = [
          ['GET', `/api/kernels/${id}`], ['DELETE', `/api/kernels/${id}`], ['POST', `/api/kernels/${id}/interrupt`],
          ['POST', `/api/kernels/${id}/restart`], ['GET', `/api/kernels/${id}/channels`],
        ] as const
        const out: Array<{ status: number, body: string }> = []
        for (const [method, route] of routes) {
          for (const where of ['query', 'header'] as const) {
            const answer = await rest(method, route, where === 'query' ? token : null, where === 'header' ? { headers: { authorization: `token ${token}` } } : {})
            out.push({ status: answer.status, body: JSON.stringify(answer.body).replaceAll(id, '<id>') })
          }
        }
        const upgrade = await new Promise<{ status: number, body: string }>((resolve, reject) => {
          const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/api/kernels/${id}/channels?token=${token}`, [V1])
          socket.once('open', () => reject(new Error('the upgrade to another owner\'s kernel succeeded')))
          socket.once('error', () => {})
          socket.once('unexpected-response', (_request, response) => {
            let body = ''
            response.on('data', (chunk: Buffer) => { body += String(chunk) })
            response.on('end', () => resolve({ status: response.statusCode ?? 0, body: body.replaceAll(id, '<id>') }))
          })
        })
        out.push(upgrade)
        return out
      }
      for (const token of [ATTACKER, OTHER_KEY]) {
        const foreign = await answers(token, neighbourKernel)
        const unknown = await answers(token, never)
        assert.deepEqual(foreign, unknown, 'another owner\'s kernel answers differently from one that never existed')
        for (const answer of foreign) {
          assert.equal(answer.status, 404, JSON.stringify(answer))
          assert.equal(JSON.parse(answer.body).error, 'not_found')
        }
        const listed = await rest('GET', '/api/kernels', token)
        assert.ok(!(listed.body as Json[]).some((kernel) => kernel.id === neighbourKernel), 'another owner\'s kernel is listed')
      }
      const model = await rest('GET', `/api/kernels/${neighbourKernel}`, NEIGHBOUR)
      assert.equal(model.status, 200)
      await assertNeighbourExact()
    })

    it('the token in the query or the Authorization header works as Open WebUI and jupyter-server send it; a wrong one in either place is a 401, on REST and the WebSocket', async () => {
      const bad = 'wrong-token-0123456789abcdef'
      const create = async (query: string, headers: Record<string, string>) => await rest('POST', '/api/kernels', null, { query, headers })
      const ok = await create(`?token=${ATTACKER}`, {})
      assert.equal(ok.status, 201, JSON.stringify(ok.body))
      await deleteKernel(ATTACKER, (ok.body as Json).id)
      const byHeader = await create('', { authorization: `token ${ATTACKER}` })
      assert.equal(byHeader.status, 201, JSON.stringify(byHeader.body))
      const id = (byHeader.body as Json).id as string
      const refused: Array<[string, Record<string, string>]> = [
        [`?token=${bad}`, {}],
        ['', { authorization: `token ${bad}` }],
        [`?token=${bad}`, { authorization: `token ${ATTACKER}` }],
        [`?token=${ATTACKER}`, { authorization: `token ${bad}` }],
        [`?token=${ATTACKER}`, { authorization: `token ${OTHER_KEY}` }],
        ['', {}],
      ]
      for (const [query, headers] of refused) {
        const answer = await create(query, headers)
        assert.equal(answer.status, 401, `${query} ${JSON.stringify(headers)}: ${JSON.stringify(answer.body)}`)
        assert.equal((answer.body as Json).error, 'unauthorized')
        assert.equal(typeof (answer.body as Json).message, 'string')
        const upgrade = await new Promise<number>((resolve) => {
          const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/api/kernels/${id}/channels${query}`, { headers })
          socket.once('open', () => { socket.close(); resolve(101) })
          socket.once('error', () => {})
          socket.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0))
        })
        assert.equal(upgrade, 401, `the WebSocket with ${query} ${JSON.stringify(headers)} answered ${upgrade}`)
      }
      for (const tokenIn of ['query', 'header'] as const) {
        const channels = await Channels.open(server, id, ATTACKER, 'v1', tokenIn)
        const result = await channels.execute('print(6*7)')
        channels.close()
        assert.equal(result.stdout, '42\n')
      }
      await deleteKernel(ATTACKER, id)
      await assertNeighbourExact()
    })

    it('malformed v1 frames (offsets past the end, zero and huge counts, non-monotonic offsets, bad JSON) and bad legacy frames close that socket with 1003; the kernel serves the next one', async () => {
      const id = await newKernel(ATTACKER)
      const good = request('kernel_info_request', {})
      const header = JSON.stringify(good.header)
      const valid = encodeV1(['shell', header, '{}', '{}', '{}'])
      const withOffsets = (count: bigint, offsets: bigint[], tail: Buffer = Buffer.alloc(0)) => {
        const head = Buffer.alloc(8 * (offsets.length + 1))
        head.writeBigUInt64LE(count, 0)
        offsets.forEach((offset, index) => head.writeBigUInt64LE(offset, 8 * (index + 1)))
        return Buffer.concat([head, tail])
      }
      const body = valid.subarray(48)
      const frames: Array<[string, Buffer | string]> = [
        ['empty frame', Buffer.alloc(0)],
        ['seven bytes', Buffer.alloc(7)],
        ['count 0', withOffsets(0n, [], body)],
        ['count 2^64-1', withOffsets(0xffffffffffffffffn, [56n], body)],
        ['count 2^63', withOffsets(1n << 63n, [56n], body)],
        ['count 1e6, table past the end', withOffsets(1_000_000n, [56n, 60n], body)],
        ['offset past the end', withOffsets(5n, [48n, 53n, 53n + BigInt(header.length), 1n << 40n, 1n << 41n], body)],
        ['offset 2^64-1', withOffsets(5n, [48n, 53n, 0xffffffffffffffffn, 60n, 61n], body)],
        ['non-monotonic offsets', withOffsets(5n, [48n, 53n + BigInt(header.length), 53n, 56n, 58n], body)],
        ['bad JSON in the header', encodeV1(['shell', '{"msg_id":', '{}', '{}', '{}'])],
        ['bad JSON in the content', encodeV1(['shell', header, '{}', '{}', '{nope'])],
        ['a header that is an array', encodeV1(['shell', '[1,2]', '{}', '{}', '{}'])],
        ['an unknown channel', encodeV1(['nowhere', header, '{}', '{}', '{}'])],
        ['invalid UTF-8 in the header', encodeV1(['shell', Buffer.from([0xff, 0xfe, 0x7b]), '{}', '{}', '{}'])],
        ['legacy: not JSON', '{"header": '],
        ['legacy: a JSON array', '[1,2,3]'],
        ['legacy: no header', '{"content": {}}'],
      ]
      for (const [name, frame] of frames) {
        const channels = await Channels.open(server, id, ATTACKER, 'v1')
        channels.socket.send(frame, { binary: typeof frame !== 'string' })
        assert.equal(await channels.closed(), 1003, `${name}: closed with ${channels.closeCode}`)
      }
      // a well-formed v1 frame with extra buffers is a message like any other
      const channels = await Channels.open(server, id, ATTACKER, 'v1')
      channels.socket.send(encodeV1(['shell', header, '{}', '{}', '{}', 'buffer-one', 'buffer-two']))
      await channels.until(() => channels.received.some((message) => message.header.msg_type === 'kernel_info_reply'))
      assert.ok(channels.received.some((message) => message.header.msg_type === 'kernel_info_reply'))
      channels.close()
      await assertKernelServes(id)
      await deleteKernel(ATTACKER, id)
      await assertNeighbourExact()
    })

    it('a frame over the size cap closes that socket with 1009; the kernel and the neighbour are unaffected', async () => {
      const id = await newKernel(ATTACKER)
      for (const framing of ['legacy', 'v1'] as const) {
        const channels = await Channels.open(server, id, ATTACKER, framing)
        const message = request('execute_request', { code: `x = "${'a'.repeat(9 * 1024 * 1024)}"` })
        channels.socket.send(frameOf(message, framing))
        // 1009, as Open WebUI's client reports it ("message too big"), not a reset (1006)
        assert.equal(await channels.closed(), 1009, `${framing}: closed with ${channels.closeCode}`)
      }
      await assertKernelServes(id)
      await deleteKernel(ATTACKER, id)
      await assertNeighbourExact()
    })

    it('a flood of execute_requests with large cells: the kernel queues a bounded number, refuses the rest at once, and the server\'s memory stays bounded', async () => {
      const id = await newKernel(ATTACKER)
      const channels = await Channels.open(server, id, ATTACKER, 'legacy')
      const blocker = channels.send(request('execute_request', { code: 'import time; time.sleep(2)' }))
      const pid = serverPid(server)
      const before = rssBytes(pid)
      const padding = '#'.repeat(4 * 1024 * 1024)
      const flood = Array.from({ length: 100 }, (_, index) => channels.send(request('execute_request', { code: `n = ${index}\n${padding}` })))
      let peak = before
      await channels.until(() => {
        peak = Math.max(peak, rssBytes(pid))
        return channels.received.filter((message) => message.header.msg_type === 'execute_reply').length >= 101
      }, 120_000)
      peak = Math.max(peak, rssBytes(pid))
      const results = await Promise.all([blocker, ...flood].map(async (msgId) => await channels.resultOf(msgId)))
      const refused = results.filter((result) => result.reply.status === 'error' && result.reply.ename === 'KernelBusy')
      // a cell that ran: ok, or (4 MiB of code on a loaded machine) stopped at the time limit
      const ran = results.filter((result) => result.reply.status === 'ok' || result.reply.ename === 'LimitExceeded')
      assert.ok(peak - before < 256 * 1024 * 1024, `the server grew by ${Math.round((peak - before) / 1048576)} MiB for 400 MiB of queued cells`)
      assert.ok(refused.length > 0, 'every one of 100 queued 4 MiB cells was kept')
      assert.equal(refused.length + ran.length, results.length, JSON.stringify(results.filter((result) => !ran.includes(result) && !refused.includes(result)).slice(0, 2)))
      assert.ok(results.every((result) => result.idleAfterReply), 'an idle came before its execute_reply')
      await assertNeighbourExact()
      const after = await channels.execute('print(n)')
      assert.match(after.stdout, /^\d+\n$/)
      channels.close()
      await deleteKernel(ATTACKER, id)
    })

    it('comm_open, comm_msg and comm_close floods and a flood of small requests change nothing: the next cell on that socket is exact', async () => {
      const id = await newKernel(ATTACKER)
      const channels = await Channels.open(server, id, ATTACKER, 'v1')
      for (let index = 0; index < 20_000; index++) {
        const commId = randomUUID()
        channels.send(request('comm_open', { comm_id: commId, target_name: 'jupyter.widget', data: { index } }))
        channels.send(request('comm_msg', { comm_id: commId, data: { method: 'update', state: { value: 'x'.repeat(64) } } }))
        channels.send(request('comm_close', { comm_id: commId, data: {} }))
        if (index % 10 === 0) channels.send(request('comm_info_request', { target_name: 'jupyter.widget' }))
      }
      const result = await channels.execute('print(6*7)')
      assert.equal(result.stdout, '42\n')
      assert.ok(channels.received.filter((message) => message.header.msg_type === 'comm_info_reply').length > 0)
      channels.close()
      await deleteKernel(ATTACKER, id)
      await assertNeighbourExact()
    })

    it('a client that never reads while cells print without end: what waits for it stays bounded, that connection is cut, the kernel and the server go on', async () => {
      const id = await newKernel(ATTACKER)
      const channels = await Channels.open(server, id, ATTACKER, 'legacy')
      const raw = (channels.socket as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
      raw.pause()
      const pid = serverPid(server)
      const before = rssBytes(pid)
      const cells = 16
      for (let index = 0; index < cells; index++) {
        channels.send(request('execute_request', { code: 'import sys\nwhile True: sys.stdout.write("x" * 65536)' }))
      }
      // until the kernel has run every cell (busy seen, then idle twice), the peak of the server's memory
      let peak = before
      let idle = 0
      let busySeen = false
      const deadline = Date.now() + 120_000
      while (idle < 2) {
        assert.ok(Date.now() < deadline, 'the kernel never went idle')
        await sleep(250)
        peak = Math.max(peak, rssBytes(pid))
        const model = await rest('GET', `/api/kernels/${id}`, ATTACKER)
        const state = (model.body as Json).execution_state
        if (state === 'busy') busySeen = true
        idle = state === 'idle' && busySeen ? idle + 1 : 0
        if (idle === 0) await assertNeighbourExact()
      }
      const grownMiB = Math.round((peak - before) / 1048576)
      // the server's RSS, so garbage not yet collected counts too: 51 MiB was seen with 12 cells on a fixed
      // server, where a server that kept what it cannot send holds every cell's output (16 × 8 = 128 MiB;
      // 104 MiB grown with 12 cells before the fix)
      assert.ok(peak - before < 72 * 1024 * 1024, `the server grew by ${grownMiB} MiB while nobody read ${cells} cells of ${CELL_OUTPUT_BYTES / 1048576} MiB`)
      raw.resume()
      const code = await channels.closed()
      assert.notEqual(code, 1000, 'the connection that never read was not cut')
      await assertKernelServes(id)
      await assertNeighbourExact()
      await deleteKernel(ATTACKER, id)
    })

    it('one kernel cannot be watched by an unbounded number of sockets: connections past the cap are refused with a 4xx JSON answer', async () => {
      const id = await newKernel(ATTACKER)
      const opened: Channels[] = []
      let refusal: { status: number, body: string } | null = null
      for (let index = 0; index < 64 && refusal === null; index++) {
        refusal = await new Promise<{ status: number, body: string } | null>((resolve) => {
          const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/api/kernels/${id}/channels?token=${ATTACKER}`)
          socket.once('open', () => {
            socket.once('close', (code) => { if (code !== 1000) resolve({ status: code, body: '' }) })
            opened.push(Channels.wrap(socket))
            resolve(null)
          })
          socket.once('error', () => {})
          socket.once('unexpected-response', (_request, response) => {
            let body = ''
            response.on('data', (chunk: Buffer) => { body += String(chunk) })
            response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
          })
        })
      }
      assert.ok(refusal !== null, `${opened.length} sockets on one kernel were all accepted`)
      assert.ok(refusal.status >= 400 && refusal.status < 500, JSON.stringify(refusal))
      assert.equal(typeof JSON.parse(refusal.body).error, 'string')
      for (const channels of opened) channels.close()
      await sleep(200)
      await assertKernelServes(id)
      await deleteKernel(ATTACKER, id)
      await assertNeighbourExact()
    })

    it('a kernel shut down (REST DELETE, shutdown_request) closes its WebSockets: sockets never outlive their kernel, so kernels cap them', async () => {
      for (const how of ['DELETE', 'shutdown_request'] as const) {
        const id = await newKernel(ATTACKER)
        const watchers = [await Channels.open(server, id, ATTACKER, 'v1'), await Channels.open(server, id, ATTACKER, 'legacy')]
        const asker = watchers[0] as Channels
        if (how === 'DELETE') {
          await deleteKernel(ATTACKER, id)
        } else {
          const shutdown = asker.send(request('shutdown_request', { restart: false }, 'control'))
          await asker.until(() => asker.received.some((message) => message.parent_header?.msg_id === shutdown && message.header.msg_type === 'shutdown_reply'))
          assert.ok(asker.received.some((message) => message.parent_header?.msg_id === shutdown && message.header.msg_type === 'shutdown_reply'), 'no shutdown_reply before the close')
        }
        for (const channels of watchers) {
          // a deadline against a socket left open forever, not a measurement
          await channels.until(() => false, 10_000).catch(() => {})
          assert.equal(channels.closeCode, 1001, `${how}: a socket of the shut-down kernel is ${channels.closeCode === null ? 'still open' : `closed with ${channels.closeCode}`}`)
        }
        assert.equal((await rest('GET', `/api/kernels/${id}`, ATTACKER)).status, 404)
      }
      await assertNeighbourExact()
    })

    it('storms of restarts and interrupts on a kernel mid-cell leave one worker for it and a kernel that serves', async () => {
      const id = await newKernel(ATTACKER)
      const channels = await Channels.open(server, id, ATTACKER, 'v1')
      const msgId = channels.send(request('execute_request', { code: 'import time\nprint("started", flush=True)\ntime.sleep(30)' }))
      await channels.until(() => channels.received.some((message) => message.parent_header?.msg_id === msgId && message.content.text === 'started\n'))
      const storm = await Promise.all(Array.from({ length: 30 }, async (_, index) =>
        await rest('POST', `/api/kernels/${id}/${index % 2 === 0 ? 'restart' : 'interrupt'}`, ATTACKER)))
      for (const answer of storm) assert.ok(answer.status === 200 || answer.status === 204, JSON.stringify(answer))
      const cut = await channels.resultOf(msgId)
      assert.equal(cut.reply.status, 'error')
      const after = await channels.execute('print(6*7)')
      assert.equal(after.stdout, '42\n', JSON.stringify(after))
      // the neighbour's kernel and this one: two live workers, no more
      assert.equal((await health(server)).live?.workers, 2, JSON.stringify((await health(server)).live))
      channels.close()
      await deleteKernel(ATTACKER, id)
      await assertNeighbourExact()
    })

    it('a storm of 5000 interrupt_requests on the control channel stops the cell, never the kernel: its state stays, every request is answered, one worker', async () => {
      const id = await newKernel(ATTACKER)
      const channels = await Channels.open(server, id, ATTACKER, 'v1')
      assert.equal((await channels.execute('kept = 6 * 7')).reply.status, 'ok')
      const msgId = channels.send(request('execute_request', { code: 'import time\nprint("started", flush=True)\ntime.sleep(60)' }))
      await channels.until(() => channels.received.some((message) => message.parent_header?.msg_id === msgId && message.content.text === 'started\n'))
      const STORM = Number(process.env.STORM ?? 5000)
      const interrupts = new Set(Array.from({ length: STORM }, () => channels.send(request('interrupt_request', {}, 'control'))))
      const replied = new Set<string>()
      let seen = 0
      // counted as they arrive: a rescan of everything received on every message would be the test's own hang
      const answered = () => {
        for (; seen < channels.received.length; seen++) {
          const message = channels.received[seen] as Received
          const parent = String(message.parent_header?.msg_id)
          if (message.header.msg_type === 'interrupt_reply' && interrupts.has(parent)) replied.add(parent)
        }
        return replied.size
      }
      await channels.until(() => answered() === STORM)
      assert.equal(channels.closeCode, null, 'the server closed a socket that read everything it was sent')
      assert.equal(answered(), STORM)
      const cut = await channels.resultOf(msgId)
      assert.equal(cut.reply.status, 'error', JSON.stringify(cut))
      assert.equal(cut.reply.ename, 'KeyboardInterrupt', JSON.stringify(cut.reply))
      // interrupts that land between cells are dropped, not kept for the next one: the state is the kernel's
      const after = await channels.execute('print(kept)')
      assert.equal(after.stdout, '42\n', JSON.stringify(after))
      assert.equal(after.reply.status, 'ok')
      assert.equal((await health(server)).live?.workers, 2, JSON.stringify((await health(server)).live))
      channels.close()
      await deleteKernel(ATTACKER, id)
      await assertNeighbourExact()
    })

    for (const how of ['REST restart', 'shutdown_request with restart']) {
      it(`a kernel restarted while it executes (${how}): the cell gets a clean error reply then idle, the kernel is fresh and usable, nothing is left`, async () => {
        const id = await newKernel(ATTACKER)
        const channels = await Channels.open(server, id, ATTACKER, 'v1')
        await channels.execute('kept = 1')
        const msgId = channels.send(request('execute_request', { code: 'import time\nprint("started", flush=True)\ntime.sleep(30)' }))
        await channels.until(() => channels.received.some((message) => message.parent_header?.msg_id === msgId && message.content.text === 'started\n'))
        if (how === 'REST restart') {
          const restarted = await rest('POST', `/api/kernels/${id}/restart`, ATTACKER)
          assert.equal(restarted.status, 200, JSON.stringify(restarted.body))
        } else {
          const shutdown = channels.send(request('shutdown_request', { restart: true }, 'control'))
          await channels.until(() => channels.received.some((message) => message.parent_header?.msg_id === shutdown && message.header.msg_type === 'shutdown_reply'))
        }
        const cut = await channels.resultOf(msgId)
        assert.equal(cut.reply.status, 'error', JSON.stringify(cut))
        assert.equal(typeof cut.reply.ename, 'string')
        assert.ok(cut.idleAfterReply)
        assert.equal(cut.stdout, 'started\n')
        const fresh = await channels.execute('print("kept" in dir())')
        assert.equal(fresh.stdout, 'False\n', JSON.stringify(fresh))
        channels.close()
        await deleteKernel(ATTACKER, id)
        await assertNeighbourExact()
      })
    }

    for (const end of ['shutdown', 'restart'] as const) {
      it(`children detached with setsid, a double fork and nohup do not survive the kernel's ${end} (seen from the host)`, async () => {
        const mark = String(7000 + Math.floor(Math.random() * 999))
        const id = await newKernel(ATTACKER)
        const channels = await Channels.open(server, id, ATTACKER, 'v1')
        const planted = await channels.execute([
          'import os, subprocess',
          `subprocess.Popen(["setsid", "nohup", "sleep", "${mark}.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)`,
          'pid = os.fork()',
          'if pid == 0:',
          '    os.setsid()',
          '    if os.fork() == 0:',
          '        os.closerange(0, 1024)',
          `        os.execvp("sleep", ["sleep", "${mark}.2"])`,
          '    os._exit(0)',
          'os.waitpid(pid, 0)',
          `subprocess.Popen("nohup sleep ${mark}.3 >/dev/null 2>&1 &", shell=True)`,
          'print("planted")',
        ].join('\n'))
        assert.equal(planted.stdout, 'planted\n', JSON.stringify(planted))
        const detached = () => hostProcessesOfJail(server).filter((process) => process.cmdline.includes(`sleep ${mark}.`))
        // the control: while the kernel lives, the host sees all three
        for (let attempt = 0; attempt < 40 && detached().length < 3; attempt++) await sleep(50)
        assert.equal(detached().length, 3, `the host does not see the detached children: ${JSON.stringify(detached())}`)
        if (end === 'shutdown') await deleteKernel(ATTACKER, id)
        else assert.equal((await rest('POST', `/api/kernels/${id}/restart`, ATTACKER)).status, 200)
        for (let attempt = 0; attempt < 100 && detached().length > 0; attempt++) await sleep(100)
        assert.deepEqual(detached(), [], `detached children outlived the kernel's ${end}`)
        if (end === 'restart') {
          const after = await channels.execute('print(6*7)')
          assert.equal(after.stdout, '42\n')
          await deleteKernel(ATTACKER, id)
        }
        channels.close()
        await assertNeighbourExact()
      })
    }

    it(`kernels per user are capped (${PER_USER}): the next is a 429 JSON answer, other users still get theirs, and churn leaks no worker`, async () => {
      const ids = []
      for (let index = 0; index < PER_USER; index++) ids.push(await newKernel(ATTACKER))
      const over = await rest('POST', '/api/kernels', ATTACKER)
      assert.equal(over.status, 429, JSON.stringify(over.body))
      assert.equal((over.body as Json).error, 'rate_limited')
      const other = await newKernel(OTHER_KEY)
      await assertKernelServes(other, OTHER_KEY)
      for (const id of ids) await deleteKernel(ATTACKER, id)
      await deleteKernel(OTHER_KEY, other)
      for (let round = 0; round < 20; round++) await deleteKernel(ATTACKER, await newKernel(ATTACKER))
      const listed = await rest('GET', '/api/kernels', ATTACKER)
      assert.deepEqual(listed.body, [])
      await assertNeighbourExact()
    })

    it('afterwards: the server serves, the neighbour\'s kernel is the only live worker, and once it is shut down every slot and worker is free', async () => {
      await assertStillServing(server)
      await assertNeighbourExact()
      const before = await health(server)
      assert.equal(before.live?.workers, 1, JSON.stringify(before.live))
      neighbour.close()
      await deleteKernel(NEIGHBOUR, neighbourKernel)
      await assertSettled(server, before)
    })
  })
}

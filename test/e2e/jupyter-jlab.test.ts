import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { KernelManager, ServerConnection, type Kernel } from '@jupyterlab/services'
import WebSocket from 'ws'
import { availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * The real @jupyterlab/services client (npm) against Warden: the binary v1 framing it asks for, the legacy
 * JSON framing when it offers no subprotocol, state across cells, interrupt, restart and shutdown, and
 * one owner's kernel out of another's reach.
 */

const OTHER_TOKEN = 'second-token-fedcba9876543210'

/** A WebSocket that offers no subprotocol, so the server answers in legacy JSON frames (Open WebUI's). */
class LegacyWebSocket extends WebSocket {
  constructor (url: string | URL, _protocols?: string | string[]) {
    super(url) // the protocols the client asks for are dropped on purpose
  }
}

function settingsFor (server: RunningServer, token: string, legacy: boolean) {
  return ServerConnection.makeSettings({
    baseUrl: `${server.baseUrl}/`,
    wsUrl: `${server.baseUrl.replace('http', 'ws')}/`,
    token,
    appendToken: true,
    WebSocket: (legacy ? LegacyWebSocket : WebSocket) as unknown as typeof globalThis.WebSocket,
    fetch,
  })
}

type Output = [string, unknown]

async function run (kernel: Kernel.IKernelConnection, code: string): Promise<{ outputs: Output[], status: string }> {
  const outputs: Output[] = []
  const future = kernel.requestExecute({ code })
  future.onIOPub = (message) => {
    const content = message.content as Record<string, any>
    const type = message.header.msg_type
    if (type === 'status' || type === 'execute_input') return
    outputs.push([type, content.text ?? content.data?.['text/plain'] ?? content.ename])
  }
  const reply = await future.done
  return { outputs, status: reply.content.status }
}

for (const driver of availableDrivers()) {
  describe(`@jupyterlab/services against Warden (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startServer(suite, { driver, env: { JUPYTER_TOKEN: OTHER_TOKEN, EXEC_TIMEOUT_MS: '20000' } })
    })

    for (const legacy of [false, true]) {
      it(`${legacy ? 'legacy JSON' : 'v1 binary'} framing: state across cells, interrupt keeps it, restart clears it, shutdown ends the kernel`, async () => {
        const manager = new KernelManager({ serverSettings: settingsFor(server, server.apiKey, legacy) })
        await manager.ready
        const kernel = await manager.startNew({ name: 'python3' })
        try {
          await kernel.info
          assert.equal((kernel as unknown as { _ws: { protocol: string } })._ws.protocol, legacy ? '' : 'v1.kernel.websocket.jupyter.org')
          assert.deepEqual(await run(kernel, 'import math\nx = 40'), { outputs: [], status: 'ok' })
          assert.deepEqual(await run(kernel, 'print("x is", x)\nx + math.floor(2.5)'), { outputs: [['stream', 'x is 40\n'], ['execute_result', '42']], status: 'ok' })

          const long = run(kernel, 'import time\nfor i in range(100):\n    time.sleep(0.1)')
          await sleep(600)
          await kernel.interrupt()
          const interrupted = await long
          assert.equal(interrupted.status, 'error')
          assert.deepEqual(interrupted.outputs.map(([type]) => type), ['error'])
          assert.equal(interrupted.outputs[0]?.[1], 'KeyboardInterrupt')
          assert.deepEqual((await run(kernel, 'x')).outputs, [['execute_result', '40']], 'the interrupt kept the state')

          await kernel.restart()
          const after = await run(kernel, 'x')
          assert.equal(after.status, 'error')
          assert.deepEqual(after.outputs, [['error', 'NameError']], 'a restart gives a fresh interpreter')

          const id = kernel.id
          await kernel.shutdown()
          const gone = await fetch(`${server.baseUrl}/api/kernels/${id}?token=${server.apiKey}`)
          assert.equal(gone.status, 404)
        } finally {
          kernel.dispose()
          manager.dispose()
        }
      })
    }

    it('one owner\'s kernel does not exist for another: REST, interrupt, delete and channels answer 404', async () => {
      const created = await fetch(`${server.baseUrl}/api/kernels?token=${server.apiKey}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"python3"}' })
      assert.equal(created.status, 201)
      const { id } = await created.json() as { id: string }
      const other = (path: string, method = 'GET') => fetch(`${server.baseUrl}/api/kernels/${id}${path}?token=${OTHER_TOKEN}`, { method })
      assert.equal((await other('')).status, 404)
      assert.equal((await other('/interrupt', 'POST')).status, 404)
      assert.equal((await other('/restart', 'POST')).status, 404)
      assert.equal((await other('', 'DELETE')).status, 404)
      const listed = await (await fetch(`${server.baseUrl}/api/kernels?token=${OTHER_TOKEN}`)).json() as unknown[]
      assert.deepEqual(listed, [])
      const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/api/kernels/${id}/channels?token=${OTHER_TOKEN}`)
      const refused = await new Promise<number>((resolve) => {
        socket.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0))
        socket.once('open', () => resolve(101))
      })
      assert.equal(refused, 404)
      assert.equal((await fetch(`${server.baseUrl}/api/kernels/${id}?token=${server.apiKey}`)).status, 200, 'the owner still has it')
      assert.equal((await fetch(`${server.baseUrl}/api/kernels/${id}?token=${server.apiKey}`, { method: 'DELETE' })).status, 204)
    })

    it('kernelspecs and the kernel model are what the client validates', async () => {
      const specs = await (await fetch(`${server.baseUrl}/api/kernelspecs?token=${server.apiKey}`)).json() as Record<string, any>
      assert.equal(specs.default, 'python3')
      assert.equal(specs.kernelspecs.python3.spec.language, 'python')
    })
  })
}

import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { KernelManager, ServerConnection, type Kernel } from '@jupyterlab/services'
import WebSocket from 'ws'
import { startCluster, type RunningCluster } from '../helpers/cluster.ts'
import {
  USER_ID, codeTool, downloadAsLibreChat, injectedFromUpload, invoke, invokeProgrammatic, programmaticTools, statefulTools, uploadAsLibreChat,
  type AgentTool,
} from '../helpers/librechat.ts'
import { availableDrivers, it, suiteContext } from '../helpers/server.ts'

/**
 * Three replicas on one Redis and one bucket behind a round-robin proxy without affinity, driven by the
 * real clients: LibreChat's (`@librechat/agents`) and Jupyter's (`@jupyterlab/services`). Each request
 * lands on the next replica, so every step below crosses replicas: stored files and workspace manifests
 * are shared, and kernels and paused runs are reached through the routing table and forwards.
 */

const HINT = 'v2:user:cluster0123456789abcdef0123456789ab'

/** The replicas that served the proxied requests from `from` on whose path matches `path`. */
function replicasFor (cluster: RunningCluster, from: number, path: RegExp): number[] {
  return cluster.served.slice(from).filter((request) => path.test(request.path)).map((request) => request.replica)
}

function agentTool (name: string, answer: (input: Record<string, unknown>) => unknown): AgentTool {
  return { name, description: `${name} for the test`, parameters: { type: 'object', properties: {} }, invoke: async (input) => answer(input as Record<string, unknown>) }
}

async function runCell (kernel: Kernel.IKernelConnection, code: string): Promise<string> {
  let text = ''
  const future = kernel.requestExecute({ code })
  future.onIOPub = (message) => {
    if (message.header.msg_type === 'stream') text += (message.content as { text?: string }).text ?? ''
  }
  const reply = await future.done
  assert.equal(reply.content.status, 'ok')
  return text
}

for (const driver of availableDrivers()) {
  describe(`three replicas behind a round-robin proxy (${driver})`, () => {
    const suite = suiteContext()
    let cluster: RunningCluster
    before(async () => {
      cluster = await startCluster(suite, { driver, replicas: 3, env: { POOL_MIN: '1', POOL_MAX: '2' } })
    })

    it('a file uploaded through one replica is read by an execution on another and its output downloads from the third', async () => {
      const from = cluster.served.length
      const ref = await uploadAsLibreChat(cluster.proxy, { kind: 'user', id: USER_ID, filename: 'in.txt', bytes: 'one replica', userId: USER_ID })
      const ran = await invoke(codeTool(cluster.proxy), { lang: 'py', code: 'open("out.txt", "w").write(open("in.txt").read() + ", then another")\nprint("ok")' }, { _injected_files: [injectedFromUpload(ref)] })
      assert.match(ran.content, /ok/)
      const output = ran.artifact.files?.find((file) => file.name === 'out.txt')
      assert.ok(output, JSON.stringify(ran.artifact))
      const downloaded = await downloadAsLibreChat(cluster.proxy, output.storage_session_id ?? ran.artifact.session_id, output.id)
      assert.equal(downloaded.status, 200)
      assert.equal(downloaded.bytes.toString(), 'one replica, then another')
      const steps = [/\/upload$/, /\/exec$/, /\/download\//].map((path) => replicasFor(cluster, from, path)[0])
      assert.equal(new Set(steps).size, 3, `upload, exec and download on three replicas: ${JSON.stringify(steps)}`)
    })

    it('a stateful session (the LibreChat client) is used through all three replicas in turn', async () => {
      const from = cluster.served.length
      const tools = statefulTools(cluster.proxy, '6650c0ffee0123456789cccc', HINT)
      const first = await invoke(tools.code, { lang: 'py', code: 'open("/mnt/data/notes.txt", "w").write("1")\nprint("written")' })
      assert.match(first.content, /written/)
      const second = await invoke(tools.bash, { command: 'echo -n 2 >> /mnt/data/notes.txt && cat /mnt/data/notes.txt' })
      assert.match(second.content, /12/)
      const third = await invoke(tools.code, { lang: 'py', code: 'print(open("/mnt/data/notes.txt").read() + "3")' })
      assert.match(third.content, /123/)
      assert.equal(second.artifact.runtime_session_id, first.artifact.runtime_session_id)
      assert.equal(third.artifact.runtime_session_id, first.artifact.runtime_session_id)
      assert.deepEqual([...new Set(replicasFor(cluster, from, /\/exec$/))].sort(), [0, 1, 2])
    })

    it('a programmatic run paused on one replica is resumed through another', async () => {
      const from = cluster.served.length
      const forwardedBefore = await forwardedTotal(cluster)
      const { python } = programmaticTools(cluster.proxy)
      const result = await invokeProgrammatic(python, 'a = await get_weather(city="A")\nb = await get_weather(city="B")\nprint(a, b)', [agentTool('get_weather', ({ city }) => `${String(city)}: sunny`)])
      assert.match(result.content, /A: sunny B: sunny/)
      const rounds = replicasFor(cluster, from, /\/exec\/programmatic$/)
      assert.equal(rounds.length, 3, 'the start and two continuations')
      assert.notEqual(rounds[0], rounds[1])
      assert.ok(await forwardedTotal(cluster) - forwardedBefore >= 2, 'the continuations reached the run\'s replica through forwards')
    })

    it('a Jupyter kernel created through one replica is driven through the others over REST and WebSocket', async () => {
      const from = cluster.served.length
      const settings = ServerConnection.makeSettings({
        baseUrl: `${cluster.proxy.baseUrl}/`,
        wsUrl: `${cluster.proxy.baseUrl.replace('http', 'ws')}/`,
        token: cluster.proxy.apiKey,
        appendToken: true,
        WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
        fetch,
      })
      const manager = new KernelManager({ serverSettings: settings })
      const kernel = await manager.startNew({ name: 'python3' })
      try {
        assert.equal(await runCell(kernel, 'total = 40'), '')
        assert.equal(await runCell(kernel, 'total += 2\nprint(total)'), '42\n')
        for (let round = 0; round < 3; round++) {
          const model = await fetch(`${cluster.proxy.baseUrl}/api/kernels/${kernel.id}?token=${cluster.proxy.apiKey}`)
          assert.equal(model.status, 200)
        }
        // a second connection (a new WebSocket through the next replica) sees the same interpreter
        const again = manager.connectTo({ model: { id: kernel.id, name: 'python3' } })
        assert.equal(await runCell(again, 'print(total)'), '42\n')
        again.dispose()
        const created = replicasFor(cluster, from, /\/api\/kernels$/)[0]
        const driven = new Set(replicasFor(cluster, from, /\/api\/kernels\/[^/]+(\/channels)?$/))
        assert.ok([...driven].some((replica) => replica !== created), `driven through a replica other than ${created}: ${JSON.stringify([...driven])}`)
        await kernel.shutdown()
      } finally {
        kernel.dispose()
        manager.dispose()
      }
    })
  })
}

async function forwardedTotal (cluster: RunningCluster): Promise<number> {
  const views = await Promise.all(cluster.replicas.map(async (replica) => (await (await fetch(`${replica.baseUrl}/health`)).json() as { cluster: { forwarded: number } }).cluster.forwarded))
  return views.reduce((sum, count) => sum + count, 0)
}

import { randomBytes } from 'node:crypto'
import { Pool } from 'undici'
import { executeLikeOpenWebUI } from '../test/helpers/openwebui-client.ts'

/** An HTTP client bound to one server; undici keeps connections open, as LibreChat's client does. */
export class Client {
  private readonly pool: Pool

  constructor (readonly url: string, readonly apiKey: string, connections: number) {
    this.pool = new Pool(url, { connections, pipelining: 1, keepAliveTimeout: 60_000 })
  }

  async exec (body: unknown, headers: Record<string, string> = {}): Promise<ExecReply> {
    const response = await this.pool.request({
      method: 'POST',
      path: '/v1/exec',
      headers: { 'content-type': 'application/json', 'x-api-key': this.apiKey, ...headers },
      body: JSON.stringify(body),
    })
    const reply = await response.body.json() as ExecReply
    if (response.statusCode !== 200) throw new Error(`exec answered ${response.statusCode}: ${JSON.stringify(reply)}`)
    return reply
  }

  /** POST /v1/exec/programmatic, answering every tool call at once with `answer` until the run ends. */
  async programmatic (body: unknown, answer: (call: { id: string, name: string, input: unknown }) => unknown): Promise<ProgrammaticReply & { rounds: number }> {
    let reply = await this.postProgrammatic(body)
    let rounds = 0
    while (reply.status === 'tool_call_required') {
      rounds++
      reply = await this.postProgrammatic({
        continuation_token: reply.continuation_token,
        tool_results: (reply.tool_calls ?? []).map((call) => ({ call_id: call.id, result: answer(call), is_error: false })),
      })
    }
    return { ...reply, rounds }
  }

  private async postProgrammatic (body: unknown): Promise<ProgrammaticReply> {
    const response = await this.pool.request({
      method: 'POST',
      path: '/v1/exec/programmatic',
      headers: { 'content-type': 'application/json', 'x-api-key': this.apiKey },
      body: JSON.stringify(body),
    })
    const reply = await response.body.json() as ProgrammaticReply
    if (response.statusCode !== 200) throw new Error(`exec/programmatic answered ${response.statusCode}: ${JSON.stringify(reply)}`)
    return reply
  }

  async upload (name: string, bytes: Buffer): Promise<{ storage_session_id: string, files: Array<{ fileId: string }> }> {
    const form = new FormData()
    form.append('kind', 'user')
    form.append('file', new Blob([bytes]), name)
    const response = await fetch(`${this.url}/v1/upload`, { method: 'POST', headers: { 'x-api-key': this.apiKey }, body: form })
    if (response.status !== 200) throw new Error(`upload answered ${response.status}`)
    return await response.json() as { storage_session_id: string, files: Array<{ fileId: string }> }
  }

  async download (sessionId: string, fileId: string): Promise<number> {
    const response = await this.pool.request({ method: 'GET', path: `/v1/download/${sessionId}/${fileId}`, headers: { 'x-api-key': this.apiKey } })
    const bytes = Buffer.from(await response.body.arrayBuffer())
    if (response.statusCode !== 200) throw new Error(`download answered ${response.statusCode}`)
    return bytes.length
  }

  async health (): Promise<Health> {
    const response = await this.pool.request({ method: 'GET', path: '/v1/health' })
    return await response.body.json() as Health
  }

  async close (): Promise<void> { await this.pool.close() }
}

export interface ExecReply {
  session_id: string
  stdout: string
  stderr: string
  status: string
  files: Array<{ id: string, name: string, storage_session_id: string }>
}

export interface ProgrammaticReply {
  status: 'tool_call_required' | 'completed' | 'error'
  continuation_token?: string
  tool_calls?: Array<{ id: string, name: string, input: unknown }>
  stdout?: string
  stderr?: string
  error?: string
}

export interface Health { pool: { acquired_warm: number, acquired_cold: number, spawned: number } }

/**
 * One iteration of a scenario; returns the latency of each execution it made (ms). A conversation makes
 * several executions per iteration, the file scenario one execution plus a download.
 */
export interface Scenario {
  name: string
  description: string
  /** the modes it runs in (default both): a Jupyter block needs kernels, which the cold baseline has none of */
  modes?: Array<'warm' | 'cold' | 'jupyter-server'>
  /** the most iterations it may run at once (tool-calling runs are capped per user: MAX_PAUSED_RUNS_PER_USER) */
  maxConcurrency?: number
  prepare?: (client: Client) => Promise<void>
  iteration: (client: Client) => Promise<number[]>
}

function check (condition: boolean, message: string): void {
  if (!condition) throw new Error(message)
}

async function timed (run: () => Promise<void>): Promise<number> {
  const start = performance.now()
  await run()
  return performance.now() - start
}

const JUPYTER_PLOT_CODE = `import pandas as pd, numpy as np, matplotlib.pyplot as plt
df = pd.DataFrame({'x': np.arange(1000), 'y': np.random.default_rng(0).normal(size=1000).cumsum()})
df.plot(x='x', y='y')
plt.show()`

const STATEFUL = { 'x-codeapi-expected-profile': 'stateful' }
const READ_TEN_CODE = 'import os\nprint(sum(len(open(f"part{i}.bin", "rb").read()) for i in range(10)))'

const PLOT_CODE = `import pandas as pd, numpy as np, matplotlib.pyplot as plt
df = pd.DataFrame({'x': np.arange(1000), 'y': np.random.default_rng(0).normal(size=1000).cumsum()})
df['rolling'] = df['y'].rolling(20).mean()
ax = df.plot(x='x', y=['y', 'rolling'], figsize=(6, 4))
plt.savefig('/mnt/data/plot.png', dpi=100)
plt.close('all')
print(len(df))
`

const FILE_CODE = `import hashlib
data = open('/mnt/data/input.bin', 'rb').read()
open('/mnt/data/output.bin', 'wb').write(data[::-1])
print(hashlib.sha256(data).hexdigest()[:16], len(data))
`

const NOTE_CODE = `import os
path = '/mnt/data/notes.txt'
lines = open(path).read().splitlines() if os.path.exists(path) else []
lines.append(f'step {len(lines) + 1}')
open(path, 'w').write('\\n'.join(lines) + '\\n')
print(len(lines))
`

/** Ten sequential tool calls, each result feeding the next; with tools, every call is a round trip to the client. */
const PTC_LOOP = 'n = 0\nfor _ in range(10):\n    n = (await add_one(n=n))["value"]\nprint(n)'
const LOCAL_ADD_ONE = 'async def add_one(n):\n    return {"value": n + 1}\n'

export function scenarios (): Scenario[] {
  // what a scenario's prepare uploaded, per server: with BENCH_COMPARE_REF both servers are prepared
  // before either is measured, and each has only its own files
  const inputs = new Map<string, { sessionId: string, fileId: string }>()
  const tenFilesOf = new Map<string, Array<{ id: string, storage_session_id: string, name: string }>>()
  const uploadTen = async (client: Client) => {
    const tenFiles: Array<{ id: string, storage_session_id: string, name: string }> = []
    for (let index = 0; index < 10; index++) {
      const uploaded = await client.upload(`part${index}.bin`, randomBytes(512 * 1024))
      tenFiles.push({ id: uploaded.files[0]?.fileId ?? '', storage_session_id: uploaded.storage_session_id, name: `part${index}.bin` })
    }
    tenFilesOf.set(client.url, tenFiles)
  }
  return [
    {
      name: 'jupyter-print',
      description: 'An Open WebUI code block: create a kernel, run print(1) over the WebSocket, delete the kernel',
      modes: ['warm', 'jupyter-server'],
      iteration: async (client) => [await timed(async () => {
        const result = await executeLikeOpenWebUI('print(1)', { url: client.url, token: client.apiKey })
        check(result.stdout === '1', `unexpected stdout ${JSON.stringify(result.stdout)} ${result.stderr.slice(0, 200)}`)
      })],
    },
    {
      name: 'jupyter-plot',
      description: 'An Open WebUI code block with pandas and a matplotlib plt.show(): the PNG comes back as display data',
      modes: ['warm', 'jupyter-server'],
      iteration: async (client) => [await timed(async () => {
        const result = await executeLikeOpenWebUI(`${JUPYTER_PLOT_CODE}`, { url: client.url, token: client.apiKey })
        check(result.result.startsWith('data:image/png;base64,'), `no image: ${result.stderr.slice(0, 300)}`)
      })],
    },
    {
      name: 'py-print',
      description: 'Python print(1)',
      iteration: async (client) => [await timed(async () => {
        const reply = await client.exec({ lang: 'py', code: 'print(1)' })
        check(reply.stdout === '1\n', `unexpected stdout ${JSON.stringify(reply.stdout)}`)
      })],
    },
    {
      name: 'bash-echo',
      description: 'Bash echo hi',
      iteration: async (client) => [await timed(async () => {
        const reply = await client.exec({ lang: 'bash', code: 'echo hi' })
        check(reply.stdout === 'hi\n', `unexpected stdout ${JSON.stringify(reply.stdout)}`)
      })],
    },
    {
      name: 'pandas-plot',
      description: 'pandas DataFrame of 1 000 rows, matplotlib plot, PNG saved to /mnt/data',
      iteration: async (client) => [await timed(async () => {
        const reply = await client.exec({ lang: 'py', code: PLOT_CODE })
        check(reply.stdout === '1000\n' && reply.files.length === 1, `plot failed: ${reply.stderr.slice(0, 300)}`)
      })],
    },
    {
      name: 'file-1mib',
      description: '1 MiB input in files[], processed, output downloaded',
      prepare: async (client) => {
        const uploaded = await client.upload('input.bin', randomBytes(1024 * 1024))
        inputs.set(client.url, { sessionId: uploaded.storage_session_id, fileId: uploaded.files[0]?.fileId ?? '' })
      },
      iteration: async (client) => [await timed(async () => {
        const ref = inputs.get(client.url)!
        const reply = await client.exec({
          lang: 'py',
          code: FILE_CODE,
          files: [{ id: ref.fileId, storage_session_id: ref.sessionId, name: 'input.bin' }],
        })
        const output = reply.files.find((file) => file.name === 'output.bin')
        check(output !== undefined, `no output: ${reply.stderr.slice(0, 300)}`)
        const size = await client.download(output!.storage_session_id, output!.id)
        check(size === 1024 * 1024, `downloaded ${size} bytes`)
      })],
    },
    {
      name: 'workspace-stateful',
      description: 'A stateful-profile call whose runtime session holds 10 files (5 MiB): they are staged from the workspace',
      modes: ['warm'],
      prepare: async (client) => {
        await uploadTen(client)
        const reply = await client.exec({ lang: 'py', code: 'print(1)', files: tenFilesOf.get(client.url), runtime_session_hint: 'bench' }, STATEFUL)
        check(reply.stdout === '1\n', `the workspace was not made: ${reply.stderr.slice(0, 200)}`)
      },
      iteration: async (client) => [await timed(async () => {
        const reply = await client.exec({ lang: 'py', code: READ_TEN_CODE, runtime_session_hint: 'bench' }, STATEFUL)
        check(reply.stdout === `${10 * 512 * 1024}\n`, `unexpected stdout ${JSON.stringify(reply.stdout)} ${reply.stderr.slice(0, 200)}`)
      })],
    },
    {
      name: 'workspace-injected',
      description: 'The same call with the 10 files (5 MiB) injected in files[] instead',
      modes: ['warm'],
      prepare: uploadTen,
      iteration: async (client) => [await timed(async () => {
        const reply = await client.exec({ lang: 'py', code: READ_TEN_CODE, files: tenFilesOf.get(client.url) })
        check(reply.stdout === `${10 * 512 * 1024}\n`, `unexpected stdout ${JSON.stringify(reply.stdout)} ${reply.stderr.slice(0, 200)}`)
      })],
    },
    {
      name: 'ptc-10-rounds',
      description: 'Programmatic tool calling: a Python program making 10 sequential tool calls, each a pause, an answer and a continuation',
      modes: ['warm'],
      maxConcurrency: 4,
      iteration: async (client) => [await timed(async () => {
        const reply = await client.programmatic({ code: PTC_LOOP, tools: [{ name: 'add_one' }] }, (call) => ({ value: Number((call.input as { n: number }).n) + 1 }))
        check(reply.status === 'completed' && reply.stdout === '10\n' && reply.rounds === 10, `unexpected reply ${JSON.stringify(reply).slice(0, 300)}`)
      })],
    },
    {
      name: 'ptc-no-tools',
      description: 'The same program with add_one defined in the code instead (one /exec, no rounds)',
      modes: ['warm'],
      maxConcurrency: 4,
      iteration: async (client) => [await timed(async () => {
        const reply = await client.exec({ lang: 'py', code: LOCAL_ADD_ONE + PTC_LOOP })
        check(reply.stdout === '10\n', `unexpected stdout ${JSON.stringify(reply.stdout)} ${reply.stderr.slice(0, 200)}`)
      })],
    },
    {
      name: 'conversation-10',
      description: '10 executions of one conversation, each passing its file to the next',
      iteration: async (client) => {
        const latencies: number[] = []
        let files: Array<{ id: string, storage_session_id: string, name: string }> = []
        for (let step = 1; step <= 10; step++) {
          latencies.push(await timed(async () => {
            const reply = await client.exec({ lang: 'py', code: NOTE_CODE, files })
            check(reply.stdout === `${step}\n`, `step ${step}: ${JSON.stringify(reply.stdout)} ${reply.stderr.slice(0, 200)}`)
            files = reply.files.map((file) => ({ id: file.id, storage_session_id: file.storage_session_id, name: file.name }))
          }))
        }
        return latencies
      },
    },
  ]
}

import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { api, availableDrivers, it, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'
import { invokeProgrammatic, programmaticTools, type AgentTool } from '../helpers/librechat.ts'

/**
 * Programmatic tool calling through LibreChat's real client: `run_tools_with_code` and
 * `run_tools_with_bash` drive every round themselves (tool_call_required, the agent's tools, the
 * continuation) against the real server and real jails.
 */

const PAUSE_TIMEOUT_S = 3

/** An agent tool that records how it was called; `run` computes its result (throwing = a failed tool). */
function agentTool (name: string, run: (input: Record<string, unknown>) => unknown | Promise<unknown>): AgentTool & { inputs: Array<Record<string, unknown>> } {
  const inputs: Array<Record<string, unknown>> = []
  return {
    name,
    description: `the ${name} tool`,
    parameters: { type: 'object', properties: {}, additionalProperties: true },
    inputs,
    invoke: async (input: unknown) => {
      const args = (typeof input === 'object' && input !== null ? input : {}) as Record<string, unknown>
      inputs.push(args)
      return await run(args)
    },
  }
}

const weather = () => agentTool('get_weather', ({ city }) => `${String(city)}: sunny`)

async function metric (server: RunningServer, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${server.baseUrl}/metrics`)).text()
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}${labels} `))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

/** Rounds the server answered while `fn` ran. */
async function countRounds (server: RunningServer, fn: () => Promise<unknown>): Promise<number> {
  const before = await metric(server, 'warden_ptc_rounds_total')
  await fn()
  return await metric(server, 'warden_ptc_rounds_total') - before
}

async function post (server: RunningServer, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: Record<string, any> }> {
  const response = await api(server, '/exec/programmatic', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  return { status: response.status, body: await response.json() as Record<string, any> }
}

async function liveRuns (server: RunningServer): Promise<number> {
  return await metric(server, 'warden_ptc_runs', '{state="running"}') + await metric(server, 'warden_ptc_runs', '{state="paused"}')
}

async function eventually (check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

for (const driver of availableDrivers()) {
  describe(`programmatic tool calling (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => { server = await startServer(suite, { driver, env: { PTC_PAUSE_TIMEOUT: `${PAUSE_TIMEOUT_S}s` } }) })

    it('Python: one call returns the tool\'s value; a failing tool raises in the code, which catches it', async () => {
      const { python } = programmaticTools(server)
      const tool = weather()
      const one = await invokeProgrammatic(python, 'r = await get_weather(city="SF")\nprint(r)', [tool])
      assert.match(one.content, /SF: sunny/)
      assert.deepEqual(tool.inputs, [{ city: 'SF' }])

      const broken = agentTool('lookup', () => { throw new Error('the index is offline') })
      const caught = await invokeProgrammatic(python, 'try:\n    await lookup(q="x")\nexcept Exception as error:\n    print("caught:", error)\nprint("went on")', [broken])
      assert.match(caught.content, /caught: the index is offline/)
      assert.match(caught.content, /went on/)
    })

    it('Python: parallel calls (asyncio.gather) are one round; a loop of sequential calls keeps its state across 12 rounds', async () => {
      const { python } = programmaticTools(server)
      const tool = weather()
      let parallel = ''
      const rounds = await countRounds(server, async () => {
        parallel = (await invokeProgrammatic(python, 'import asyncio\nprint(await asyncio.gather(*(get_weather(city=c) for c in ["A", "B", "C"])))', [tool])).content
      })
      assert.match(parallel, /\['A: sunny', 'B: sunny', 'C: sunny'\]/)
      assert.equal(rounds, 1)

      const counter = agentTool('add-one', ({ n }) => ({ value: Number(n) + 1 }))
      let looped = ''
      const loopRounds = await countRounds(server, async () => {
        looped = (await invokeProgrammatic(python, 'import os\nn = 0\nseen = []\nfor _ in range(12):\n    n = (await add_one(n=n))["value"]\n    seen.append(os.getpid())\nprint(n, len(set(seen)))', [counter])).content
      })
      assert.match(looped, /12 1/, 'twelve results summed in one process')
      assert.equal(loopRounds, 12)
    })

    it('a tool named with "-" and one named like a Python keyword are called by their identifiers; tool_call.name stays the original', async () => {
      const { python } = programmaticTools(server)
      const dashed = agentTool('get-stock-price', ({ ticker }) => ({ ticker, price: 42 }))
      const keyword = agentTool('import', ({ what }) => `imported ${String(what)}`)
      const result = await invokeProgrammatic(python, 'p = await get_stock_price(ticker="ACME")\nprint(p["price"], await import_tool(what="data"))', [dashed, keyword])
      assert.match(result.content, /42 imported data/)
      assert.deepEqual(dashed.inputs, [{ ticker: 'ACME' }])
    })

    it('files written during the run come back as attachments', async () => {
      const { python } = programmaticTools(server)
      const result = await invokeProgrammatic(python, 'w = await get_weather(city="Oslo")\nopen("/mnt/data/report.txt", "w").write(w)\nprint("saved")', [weather()])
      const file = result.artifact.files?.find((candidate) => candidate.name === 'report.txt')
      assert.ok(file, JSON.stringify(result.artifact))
      const download = await api(server, `/download/${file.storage_session_id ?? result.artifact.session_id}/${file.id}`)
      assert.equal(await download.text(), 'Oslo: sunny')
    })

    it('the time limit counts the code, not the tools: a 1.5 s tool under a 1 s limit completes; code running past the limit fails with "Time limit exceeded"', async () => {
      const { python } = programmaticTools(server)
      const slow = agentTool('slow', async () => { await new Promise((resolve) => setTimeout(resolve, 1500)); return 'done' })
      const waited = await invokeProgrammatic(python, 'print(await slow())', [slow], { timeout: 1000 })
      assert.match(waited.content, /done/)
      await assert.rejects(invokeProgrammatic(python, 'import time\nawait get_weather(city="x")\ntime.sleep(5)', [weather()], { timeout: 1000 }),
        /Execution exceeded the time limit/)
    })

    it('an aborted run (the client\'s cancel request) stops and frees its worker', async () => {
      const { python } = programmaticTools(server)
      const cancelledBefore = await metric(server, 'warden_ptc_runs_total', '{outcome="cancelled"}')
      const controller = new AbortController()
      const running = invokeProgrammatic(python, 'import time\ntime.sleep(30)\nprint(await get_weather(city="x"))', [weather()], { signal: controller.signal })
      await eventually(async () => await liveRuns(server) === 1, 'the run started')
      controller.abort()
      await assert.rejects(running)
      await eventually(async () => await liveRuns(server) === 0, 'the run ended')
      assert.equal(await metric(server, 'warden_ptc_runs_total', '{outcome="cancelled"}'), cancelledBefore + 1)
      assert.equal(await metric(server, 'warden_live_workers', '{kind="ptc"}'), 0)
    })

    it('POST /exec/programmatic/cancel with a request\'s X-LibreChat-Code-Request-ID stops its run; another user\'s cancel finds nothing', async () => {
      const requestId = crypto.randomUUID()
      const headers = { 'x-librechat-code-request-id': requestId, 'user-id': 'carol-6650c0ffee03' }
      const running = post(server, { code: 'import time\ntime.sleep(30)\nprint(await get_weather(city="x"))', tools: [{ name: 'get_weather' }] }, headers)
      await eventually(async () => await liveRuns(server) === 1, 'the run started')
      const cancel = async (userId: string) => await (await api(server, '/exec/programmatic/cancel', {
        method: 'POST', headers: { 'content-type': 'application/json', 'user-id': userId }, body: JSON.stringify({ request_id: requestId }),
      })).json()
      assert.deepEqual(await cancel('mallory-6650c0ffee04'), { cancelled: false })
      assert.deepEqual(await cancel('carol-6650c0ffee03'), { cancelled: true })
      const answer = await running
      assert.equal(answer.body.status, 'error')
      assert.equal(answer.body.error, 'Execution failed or timed out')
      assert.match(answer.body.stderr, /cancelled/)
      await eventually(async () => await liveRuns(server) === 0, 'the run ended')
    })

    it('a cancel that comes before the code began (its input still being staged) answers the cancel, not a lost sandbox', async () => {
      const userId = 'dave-6650c0ffee05'
      const input = await uploadFile(server, 'big.bin', new Uint8Array(64 * 1024 * 1024), userId)
      const requestId = crypto.randomUUID()
      const running = post(server, {
        code: 'print(await get_weather(city="x"))',
        tools: [{ name: 'get_weather' }],
        files: [{ id: input.fileId, session_id: input.sessionId, name: 'big.bin' }],
      }, { 'x-librechat-code-request-id': requestId, 'user-id': userId })
      // the run is registered once its worker is there, and 64 MiB take a while to reach it
      const deadline = Date.now() + 10_000
      while (await liveRuns(server) === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 2))
      const cancel = await api(server, '/exec/programmatic/cancel', {
        method: 'POST', headers: { 'content-type': 'application/json', 'user-id': userId }, body: JSON.stringify({ request_id: requestId }),
      })
      assert.deepEqual(await cancel.json(), { cancelled: true })
      const answer = await running
      assert.equal(answer.status, 200, JSON.stringify(answer.body))
      assert.equal(answer.body.status, 'error')
      assert.equal(answer.body.error, 'Execution failed or timed out')
      assert.match(answer.body.stderr, /cancelled/)
      await eventually(async () => await liveRuns(server) === 0, 'the run ended')
    })

    it('Bash: one call prints compact JSON; background jobs are one round; a failing tool fails its function with the message on stderr; a loop keeps going for 6 rounds', async () => {
      const { bash } = programmaticTools(server)
      const tool = agentTool('get_weather', ({ city }) => ({ city, sky: 'clear' }))
      const one = await invokeProgrammatic(bash, 'w=$(get_weather \'{"city": "SF"}\')\necho "got $w"', [tool])
      assert.match(one.content, /got \{"city":"SF","sky":"clear"\}/)

      let parallel = ''
      const rounds = await countRounds(server, async () => {
        parallel = (await invokeProgrammatic(bash, [
          '{ a=$(get_weather \'{"city": "A"}\'); printf \'%s\\n\' "$a" > /tmp/a.json; } &',
          '{ b=$(get_weather \'{"city": "B"}\'); printf \'%s\\n\' "$b" > /tmp/b.json; } &',
          'wait',
          'cat /tmp/a.json /tmp/b.json',
        ].join('\n'), [tool])).content
      })
      assert.match(parallel, /"city":"A"[\s\S]*"city":"B"/)
      assert.equal(rounds, 1)

      const broken = agentTool('lookup', () => { throw new Error('no such page') })
      const failed = await invokeProgrammatic(bash, 'if out=$(lookup \'{}\' 2>/tmp/err); then echo ok; else echo "failed with $?: $(cat /tmp/err)"; fi', [broken])
      assert.match(failed.content, /failed with 1: no such page/)

      const loop = await invokeProgrammatic(bash, 'n=0\nfor i in 1 2 3 4 5 6; do n=$(add_one "{\\"n\\": $n}" | sed \'s/[^0-9]//g\'); done\necho "n=$n"', [agentTool('add_one', ({ n }) => Number(n) + 1)])
      assert.match(loop.content, /n=6/)
    })

    it('a paused run cannot be continued by another user, nor with a used token; the owner continues it', async () => {
      const alice = { 'user-id': 'alice-6650c0ffee01' }
      const started = await post(server, { code: 'print(await get_weather(city="SF"))', tools: [{ name: 'get_weather' }] }, alice)
      assert.equal(started.body.status, 'tool_call_required', JSON.stringify(started.body))
      const token = started.body.continuation_token as string
      const results = [{ call_id: started.body.tool_calls[0].id, result: 'SF: sunny', is_error: false }]
      const stolen = await post(server, { continuation_token: token, tool_results: results }, { 'user-id': 'bob-6650c0ffee02' })
      assert.equal(stolen.status, 404)
      assert.equal(stolen.body.error, 'not_found')
      const unknown = await post(server, { continuation_token: 'x'.repeat(43), tool_results: results }, alice)
      assert.deepEqual(unknown.body, stolen.body, 'another user\'s token and a made-up one get the same answer')
      const wrongIds = await post(server, { continuation_token: token, tool_results: [{ call_id: 'call_999', result: 1 }] }, alice)
      assert.equal(wrongIds.status, 400)
      const done = await post(server, { continuation_token: token, tool_results: results }, alice)
      assert.equal(done.body.status, 'completed', JSON.stringify(done.body))
      assert.equal(done.body.stdout, 'SF: sunny\n')
      const replayed = await post(server, { continuation_token: token, tool_results: results }, alice)
      assert.equal(replayed.status, 404)
    })

    it('a paused run does not outlive PTC_PAUSE_TIMEOUT: it is stopped, its worker freed, and its token answers 404', async () => {
      const expiredBefore = await metric(server, 'warden_ptc_runs_total', '{outcome="expired"}')
      const started = await post(server, { code: 'print(await get_weather(city="SF"))', tools: [{ name: 'get_weather' }] })
      assert.equal(started.body.status, 'tool_call_required')
      await eventually(async () => await metric(server, 'warden_ptc_runs_total', '{outcome="expired"}') === expiredBefore + 1, 'the run expired', PAUSE_TIMEOUT_S * 1000 + 10_000)
      assert.equal(await liveRuns(server), 0)
      const late = await post(server, { continuation_token: started.body.continuation_token, tool_results: [{ call_id: started.body.tool_calls[0].id, result: 'x' }] })
      assert.equal(late.status, 404)
    })

    it('inside a paused run the jail holds: uid 65534, no capabilities, seccomp on, no network, only its own processes; a forged call for an unregistered tool ends the run with LibreChat\'s error', async () => {
      const { python } = programmaticTools(server)
      const probe = [
        'import os, socket',
        'await get_weather(city="x")',
        'status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)',
        'print("uid", os.getuid(), "caps", status["CapEff"].strip(), "nnp", status["NoNewPrivs"].strip(), "seccomp", status["Seccomp"].strip())',
        'try:',
        '    socket.create_connection(("1.1.1.1", 53), timeout=2)',
        '    print("network: reachable")',
        'except OSError as error:',
        '    print("network: refused")',
        'print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))',
        'print("key", any(os.environ.get(k, "").startswith("test-key-") for k in os.environ))',
      ].join('\n')
      const result = await invokeProgrammatic(python, probe, [weather()])
      assert.match(result.content, /uid 65534 caps 0000000000000000 nnp 1 seccomp 2/)
      assert.match(result.content, /network: refused/)
      assert.match(result.content, /pids \[1\]/)
      assert.match(result.content, /key False/)

      const forged = 'import json, os\nbody = json.dumps({"type": "tool_calls", "calls": [{"id": "x1", "name": "rm_everything", "input": {}}]}).encode()\nos.write(3, b"M" + len(body).to_bytes(4, "big") + body)\nimport time\ntime.sleep(5)'
      await assert.rejects(invokeProgrammatic(python, forged, [weather()]), /Generated code requested a tool that is not available/)
    })

    it('requests the client never sends well-formed get clear 4xx answers', async () => {
      assert.equal((await post(server, { code: 'print(1)' })).status, 400, 'no tools')
      assert.equal((await post(server, { tools: [{ name: 'a' }] })).status, 400, 'no code')
      assert.equal((await post(server, { code: 'x', tools: Array.from({ length: 101 }, (_, i) => ({ name: `t${i}` })) })).status, 400, '101 tools')
      const clash = await post(server, { lang: 'bash', code: 'x', tools: [{ name: 'a.b' }, { name: 'a-b' }] })
      assert.equal(clash.status, 400)
      assert.match(clash.body.message, /both become "a_b"/)
      assert.equal((await post(server, { lang: 'go', code: 'x', tools: [{ name: 'a' }] })).body.error, 'unsupported_language')
      assert.equal((await post(server, { continuation_token: 'abc' })).status, 400, 'a token without results')
      const workspace = await post(server, { lang: 'bash', code: 'ls', tools: [] }, { 'x-librechat-code-workspace-id': 'ws-1' })
      assert.equal(workspace.status, 409)
      assert.equal(workspace.body.error, 'stateful_workspace_unsupported')
      const plain = await post(server, { lang: 'bash', code: 'echo plain', tools: [] })
      assert.deepEqual([plain.body.status, plain.body.stdout], ['completed', 'plain\n'], 'no tools: run as /exec')
      const cancelled = await api(server, '/exec/programmatic/cancel', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ request_id: 'nothing-in-flight' }) })
      assert.deepEqual(await cancelled.json(), { cancelled: false })
    })
  })
}

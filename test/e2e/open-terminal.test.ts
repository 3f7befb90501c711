import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'
import { callToolLikeBackend, callToolLikeBrowser, PaneClient, toolsFromSpec, type CallOptions, type Tool } from '../helpers/open-terminal-client.ts'

/**
 * Open WebUI's Open Terminal path against Warden's terminal API, through a client that sends exactly the
 * requests ../shared/spec/open-terminal.md documents (test/helpers/open-terminal-client.ts). Each test
 * names the section of the study it replays (§6.2 is the conformance plan).
 */

const KEY = 'owui-terminal-key-0123456789'
const OTHER_KEY = 'another-deployment-key-0123'
const TOOLS = ['run_command', 'get_process_status', 'list_processes', 'send_process_input', 'kill_process', 'list_files', 'read_file',
  'display_file', 'write_file', 'replace_file_content', 'grep_search', 'glob_search']

type Json = Record<string, any>

for (const driver of availableDrivers()) {
  describe(`Open WebUI's Open Terminal client against Warden (${driver})`, () => {
    let server: RunningServer
    let base: string
    let tools: Map<string, Tool>
    const suite = suiteContext()
    const as = (userId: string | undefined, extra: Partial<CallOptions> = {}): CallOptions => ({ baseUrl: base, key: KEY, userId, chatId: 'chat-1', floats: ['wait', 'timeout'], ...extra })
    const tool = (name: string) => {
      const found = tools.get(name)
      assert.ok(found !== undefined, `no tool ${name}`)
      return found
    }
    const call = async (name: string, args: Json, options: CallOptions) => await callToolLikeBackend(tool(name), args, options)
    const run = async (command: string, options: CallOptions, extra: Json = {}) => {
      const answer = await call('run_command', { command, wait: 20, ...extra }, options)
      assert.equal(answer.status, 200, answer.text)
      return answer.body as Json
    }
    const output = (body: Json) => (body.output as Array<{ data: string }>).map((entry) => entry.data).join('')

    before(async () => {
      server = await startServer(suite, { driver, env: { CODE_API_KEY: `${KEY},${OTHER_KEY}`, MEMORY_LIMIT_MB: '256', PIDS_LIMIT: '64' } })
      base = `${server.baseUrl}/terminal`
      const spec = await (await fetch(`${base}/openapi.json`, { headers: { authorization: `Bearer ${KEY}`, accept: 'application/json' } })).json() as Json
      tools = new Map(toolsFromSpec(spec).map((item) => [item.name, item]))
    })

    it('§6.2.1 admin verify: /api/config answers without auth, /api/v1/policies is not 2xx (not an orchestrator)', async () => {
      const config = await fetch(`${base}/api/config`)
      assert.equal(config.status, 200)
      assert.deepEqual(await config.json(), { features: { terminal: true, notebooks: false, system: true } })
      const policies = await fetch(`${base}/api/v1/policies`, { headers: { authorization: `Bearer ${KEY}` } })
      assert.ok(policies.status >= 400, `policies answered ${policies.status}`)
      const system = await fetch(`${base}/system`, { headers: { authorization: `Bearer ${KEY}` } })
      assert.match((await system.json() as Json).prompt, /no network/i)
    })

    it('§6.2.2 spec to tools: the 12 operationIds, required params, and every query param with its real type', async () => {
      assert.deepEqual([...tools.keys()].sort(), [...TOOLS].sort())
      assert.equal(tool('run_command').params.command?.required, true)
      assert.equal(tool('run_command').params.wait?.type, 'number')
      assert.equal(tool('grep_search').params.regex?.type, 'boolean')
      assert.equal(tool('grep_search').params.include?.type, 'array')
      assert.equal(tool('read_file').params.start_line?.type, 'integer')
      assert.equal(tool('kill_process').params.force?.type, 'boolean')
      assert.equal(tool('get_process_status').params.process_id?.in, 'path')
    })

    it('§2.2 run_command: merged output with \\r\\n, the exit code, done within wait; the POST body repeats wait (§4.2)', async () => {
      const body = await run('echo hello; echo err 1>&2; exit 3', as('u-A'), { wait: 5 })
      assert.equal(body.status, 'done')
      assert.equal(body.exit_code, 3)
      assert.equal(output(body), 'hello\r\nerr\r\n')
      assert.equal(body.next_offset, 1)
      assert.match(body.id, /^\d{8}-\d{6}-[0-9a-f]{6}$/)
    })

    it('§2.2 a command still running is polled with get_process_status(offset=next_offset, wait)', async () => {
      const started = await run('sleep 1; echo done', as('u-A'), { wait: 0 })
      assert.equal(started.status, 'running')
      assert.equal(started.exit_code, null)
      const polled = await call('get_process_status', { process_id: started.id, wait: 10, offset: started.next_offset }, as('u-A'))
      assert.equal(polled.body.status, 'done', polled.text)
      assert.equal(output(polled.body), 'done\r\n')
      const listed = await call('list_processes', {}, as('u-A'))
      assert.ok((listed.body as Json[]).some((item) => item.id === started.id && item.status === 'done'))
      // a command that already ended answers at once, whatever wait says: this wait is past the test's deadline
      const again = await call('get_process_status', { process_id: started.id, wait: 120, offset: polled.body.next_offset }, as('u-A'))
      assert.equal(again.body.status, 'done', again.text)
      assert.equal(output(again.body), '')
    })

    it('§2.1 send_process_input decodes escapes, kill_process answers killed (DELETE with body {}, §6.2.3)', async () => {
      const started = await run('read line; echo "got:$line"; sleep 60', as('u-A'), { wait: 0 })
      assert.equal((await call('send_process_input', { process_id: started.id, input: 'abc\\n' }, as('u-A'))).status, 200)
      const polled = await call('get_process_status', { process_id: started.id, wait: 1 }, as('u-A'))
      assert.match(output(polled.body), /got:abc/)
      const killed = await call('kill_process', { process_id: started.id, force: true }, as('u-A'))
      assert.deepEqual(killed.body, { status: 'killed' })
      const after = await call('get_process_status', { process_id: started.id, wait: 5 }, as('u-A'))
      assert.equal(after.body.status, 'killed')
      assert.equal((await call('get_process_status', { process_id: '20260101-000000-abcdef' }, as('u-A'))).status, 404)
    })

    it('a command past its timeout is killed with what it started, and says so; limits as /exec', async () => {
      const body = await run('(sleep 100 &); sleep 100', as('u-A'), { timeout: 1, wait: 20 })
      assert.equal(body.status, 'killed')
      assert.match(output(body), /time limit of 1 s/)
      const left = await run('ps -eo args | grep -c "^sleep 100" || true', as('u-A'))
      assert.equal(output(left).trim(), '0')
      const memory = await run('python3 -c "x = bytearray(400 * 1024 * 1024)"; echo "exit $?"', as('u-A'))
      assert.match(output(memory), /exit (137|1)\b|MemoryError|Killed/)
    })

    it('a terminal remembers its last 128 finished commands, not every one, and never forgets a running one', async () => {
      const user = as('u-many')
      const long = await run('sleep 120', user, { wait: 0, timeout: 180 })
      assert.equal(long.status, 'running')
      const ids: string[] = []
      for (let index = 0; index < 140; index++) ids.push((await run('true', user, { wait: 5 })).id as string)
      const status = async (id: string) => await call('get_process_status', { process_id: id, wait: 0 }, user)
      assert.equal((await status(ids[0] ?? '')).status, 404, 'the oldest finished command is forgotten')
      assert.equal((await status(ids.at(-1) ?? '')).status, 200, 'the newest answers')
      const still = await status(long.id)
      assert.equal(still.status, 200, still.text)
      assert.equal(still.body.status, 'running')
      assert.equal((await call('kill_process', { process_id: long.id, force: true }, user)).status, 200)
    })

    it('the API key is not visible in the jail, and there is no network', async () => {
      const body = await run('env; cat /proc/1/environ; ls /proc/*/environ >/dev/null; (exec 3<>/dev/tcp/1.1.1.1/53) 2>&1 && echo NET-OPEN || echo net-closed', as('u-A'))
      const text = output(body)
      assert.ok(!text.includes(KEY), 'the key is in the jail')
      assert.ok(!text.includes('CODE_API_KEY'))
      assert.match(text, /net-closed/)
      assert.doesNotMatch(text, /NET-OPEN/)
    })

    it('§6.2.3 backend file tools: write, read a line range, replace, grep with regex=True and include=[\'*.py\'], glob, display', async () => {
      const me = as('u-A')
      assert.deepEqual((await call('write_file', { path: 'proj/a.py', content: 'x = 1\ny = 2\n' }, me)).body, { path: '/mnt/data/proj/a.py', size: 12 })
      await call('write_file', { path: 'proj/b.txt', content: 'y = 3\n' }, me)
      const read = await call('read_file', { path: 'proj/a.py', start_line: 2 }, me)
      assert.deepEqual(read.body, { path: '/mnt/data/proj/a.py', total_lines: 2, content: 'y = 2\n' })
      const replaced = await call('replace_file_content', { path: 'proj/a.py', replacements: [{ target: 'y = 2', replacement: 'y = 20' }] }, me)
      assert.equal(replaced.status, 200, replaced.text)
      const grep = await call('grep_search', { query: 'y = \\d+', regex: true, include: ['*.py'], max_results: 5 }, me)
      assert.equal(grep.status, 200, grep.text)
      assert.deepEqual(grep.body.matches, [{ file: '/mnt/data/proj/a.py', line: 2, content: 'y = 20' }])
      const glob = await call('glob_search', { pattern: '**/*.py', exclude: ['b.*'] }, me)
      assert.deepEqual(glob.body.matches.map((match: Json) => match.path), ['proj/a.py'])
      assert.equal((await call('display_file', { path: 'proj/a.py' }, me)).body.exists, true)
      assert.equal((await call('display_file', { path: 'nope' }, me)).body.exists, false)
      const missing = await call('replace_file_content', { path: 'proj/a.py', replacements: [{ target: 'zzz', replacement: '' }] }, me)
      assert.equal(missing.status, 400)
      assert.match(missing.body.detail, /Target string not found/)
    })

    it('§6.2.4 browser-style calls: regex=true, start_line=null, a DELETE with Content-Type json and no body', async () => {
      const browser = as(undefined, { chatId: 'chat-direct' })
      await callToolLikeBrowser(tool('write_file'), { path: 'd.py', content: 'hello\n' }, browser)
      const grep = await callToolLikeBrowser(tool('grep_search'), { query: 'hel+o', regex: true, include: ['*.py', '*.txt'] }, browser)
      assert.equal(grep.status, 200, grep.text)
      assert.equal(grep.body.matches.length, 1)
      const read = await callToolLikeBrowser(tool('read_file'), { path: 'd.py', start_line: null, end_line: null }, browser)
      assert.equal(read.body.content, 'hello\n')
      const started = await callToolLikeBrowser(tool('run_command'), { command: 'sleep 30' }, { ...browser })
      const killed = await callToolLikeBrowser(tool('kill_process'), { process_id: started.body.id }, browser)
      assert.equal(killed.status, 200, killed.text)
    })

    it('bad input gets a 4xx with {error, message}: a boolean that is not one, wait out of range, no command', async () => {
      for (const [route, init] of [
        ['/files/grep?query=x&regex=maybe', {}],
        ['/execute?wait=9000', { method: 'POST', body: '{"command":"true"}' }],
        ['/execute', { method: 'POST', body: '{}' }],
        ['/execute', { method: 'POST', body: '{not json' }],
      ] as const) {
        const response = await fetch(`${base}${route}`, { ...init, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'x-user-id': 'u-A' } })
        assert.equal(response.status, 400, route)
        const body = await response.json() as Json
        assert.equal(body.error, 'invalid_request')
        assert.equal(typeof body.message, 'string')
      }
    })

    it('§6.2.5 isolation: u-B sees none of u-A\'s files, processes or home; the same user under another key is another user; a wrong key is 401', async () => {
      await call('write_file', { path: 'secret.txt', content: 'A only' }, as('u-A'))
      const sleeper = await run('sleep 300 & echo started', as('u-A'), { wait: 2 })
      assert.match(output(sleeper), /started/)
      const b = as('u-B')
      assert.equal((await call('read_file', { path: 'secret.txt' }, b)).status, 404)
      assert.ok(!(await call('list_files', {}, b)).body.entries.some((entry: Json) => entry.name === 'secret.txt'))
      const processes = await run('ps -eo args; ls /mnt/data; cat /mnt/data/secret.txt 2>&1', b)
      assert.doesNotMatch(output(processes), /sleep 300/)
      assert.doesNotMatch(output(processes), /A only/)
      assert.ok(!(await call('list_processes', {}, b)).body.some((item: Json) => item.id === sleeper.id))
      assert.equal((await call('get_process_status', { process_id: sleeper.id }, b)).status, 404)
      const otherKey = await call('read_file', { path: 'secret.txt' }, as('u-A', { key: OTHER_KEY }))
      assert.equal(otherKey.status, 404, 'X-User-Id is scoped to the key that names it')
      const wrong = await call('list_files', {}, as('u-A', { key: 'wrong-key' }))
      assert.equal(wrong.status, 401)
      assert.equal(wrong.body.error, 'unauthorized')
    })

    it('§6.2.6 sidebar: cwd, upload (field file), view and serve with a sandbox CSP, mkdir, move (409), delete, archive, ports', async () => {
      const headers = { authorization: `Bearer ${KEY}`, 'x-user-id': 'u-S', 'x-session-id': 'chat-s' }
      const json = { ...headers, 'content-type': 'application/json' }
      const cwd = await (await fetch(`${base}/files/cwd`, { headers })).json() as Json
      assert.deepEqual(cwd, { cwd: '/mnt/data', home: '/mnt/data', root: { path: '/mnt/data', label: 'Home' } })
      assert.equal((await fetch(`${base}/files/mkdir`, { method: 'POST', headers: json, body: '{"path":"site"}' })).status, 200)
      assert.deepEqual(await (await fetch(`${base}/files/cwd`, { method: 'POST', headers: json, body: '{"path":"site"}' })).json(), { cwd: '/mnt/data/site' })
      assert.equal((await fetch(`${base}/files/cwd`, { method: 'POST', headers: json, body: '{"path":"nowhere"}' })).status, 404)
      const form = new FormData()
      form.append('file', new Blob(['<script>alert(1)</script>']), 'index.html')
      const uploaded = await fetch(`${base}/files/upload?directory=.`, { method: 'POST', headers, body: form })
      assert.deepEqual(await uploaded.json(), { path: '/mnt/data/site/index.html', size: 25 })
      const view = await fetch(`${base}/files/view?path=index.html`, { headers })
      assert.equal(view.headers.get('content-security-policy'), 'sandbox allow-scripts')
      assert.equal(view.headers.get('x-content-type-options'), 'nosniff')
      assert.equal(await view.text(), '<script>alert(1)</script>')
      const served = await fetch(`${base}/files/serve/mnt/data/site/index.html`, { headers })
      assert.equal(served.status, 200)
      assert.match(served.headers.get('content-type') ?? '', /^text\/html/)
      assert.equal(served.headers.get('content-security-policy'), 'sandbox allow-scripts')
      await fetch(`${base}/files/upload?directory=.`, { method: 'POST', headers, body: (() => { const f = new FormData(); f.append('file', new Blob(['x']), 'other.html'); return f })() })
      const conflict = await fetch(`${base}/files/move`, { method: 'POST', headers: json, body: '{"source":"other.html","destination":"index.html"}' })
      assert.equal(conflict.status, 409)
      assert.equal((await conflict.json() as Json).detail, 'Destination already exists')
      assert.equal((await fetch(`${base}/files/move`, { method: 'POST', headers: json, body: '{"source":"other.html","destination":"moved.html"}' })).status, 200)
      const archive = await fetch(`${base}/files/archive`, { method: 'POST', headers: json, body: '{"paths":["/mnt/data/site"]}' })
      assert.equal(archive.headers.get('content-type'), 'application/zip')
      assert.equal(archive.headers.get('content-disposition'), 'attachment; filename="site.zip"')
      const zip = Buffer.from(await archive.arrayBuffer())
      assert.equal(zip.subarray(0, 2).toString(), 'PK')
      assert.ok(zip.includes('site/moved.html'))
      const deleted = await fetch(`${base}/files/delete?path=moved.html`, { method: 'DELETE', headers: { ...headers, 'content-type': 'application/json' } })
      assert.deepEqual(await deleted.json(), { path: '/mnt/data/site/moved.html', type: 'file' })
      assert.deepEqual(await (await fetch(`${base}/ports`, { headers })).json(), { ports: [] })
    })

    it('§6.2.7 the terminal pane: auth frame, resize 100x30, ping, binary keystrokes; a wrong token closes with 4001; a closed pane is gone', async () => {
      const pane = await PaneClient.open(as('u-P'))
      pane.resize(100, 30)
      pane.ping()
      pane.socket.send('echo text-frames-are-ignored\n')
      pane.type('stty size; echo hi-$((6*7))\n')
      const text = await pane.until(/hi-42/)
      assert.match(text, /30 100/)
      assert.doesNotMatch(text, /text-frames-are-ignored\r\n/)
      const id = pane.id
      const listed = await (await fetch(`${base}/api/terminals`, { headers: { authorization: `Bearer ${KEY}`, 'x-user-id': 'u-P' } })).json() as Json[]
      assert.ok(listed.some((item) => item.id === id))
      pane.close()
      await pane.closed()
      const wrong = await PaneClient.open({ ...as('u-P'), token: 'not-the-key' })
      assert.equal(await wrong.closed(), 4001)
      // another user's id does not attach either
      const other = await PaneClient.open(as('u-Q'))
      const stolen = await PaneClient.open({ ...as('u-P'), id: other.id })
      assert.equal(await stolen.closed(), 4001)
      other.close()
      const gone = await fetch(`${base}/api/terminals/${id}`, { headers: { authorization: `Bearer ${KEY}`, 'x-user-id': 'u-P' } })
      assert.equal(gone.status, 404)
      assert.equal((await gone.json() as Json).error, 'Session not found')
    })

    it('the pane and the commands share one jail: a file the shell writes is what read_file reads', async () => {
      const pane = await PaneClient.open(as('u-J'))
      pane.type('echo from-the-pane > pane.txt && echo written-ok\n')
      // the shell echoes the keystrokes too: wait for the command's own output line
      await pane.until(/\nwritten-ok/)
      pane.close()
      assert.equal((await call('read_file', { path: 'pane.txt' }, as('u-J'))).body.content, 'from-the-pane\n')
    })

    it('§4.3 the home persists: files written before a restart of Warden are there after it', async () => {
      await call('write_file', { path: 'notes/keep.txt', content: 'still here' }, as('u-R'))
      await run('echo made-by-a-command > made.txt', as('u-R'))
      await server.restart()
      base = `${server.baseUrl}/terminal`
      assert.equal((await call('read_file', { path: 'notes/keep.txt' }, as('u-R'))).body.content, 'still here')
      assert.equal(output(await run('cat made.txt', as('u-R'))), 'made-by-a-command\r\n')
    })
  })
}

for (const driver of availableDrivers()) {
  describe(`Open Terminal with a terminal per chat, TERMINAL_PER_CHAT (${driver})`, () => {
    let base: string
    const suite = suiteContext()
    before(async () => {
      const server = await startServer(suite, { driver, env: { CODE_API_KEY: KEY, TERMINAL_PER_CHAT: 'true' } })
      base = `${server.baseUrl}/terminal`
    })

    it('§4.3 two chats of one user (X-Session-Id) get two jails: neither sees the other\'s files or processes', async () => {
      const spec = await (await fetch(`${base}/openapi.json`)).json() as Json
      const tools = new Map(toolsFromSpec(spec).map((item) => [item.name, item]))
      const chat = (chatId: string): CallOptions => ({ baseUrl: base, key: KEY, userId: 'u-C', chatId, floats: ['wait'] })
      const write = tools.get('write_file')
      const read = tools.get('read_file')
      const run = tools.get('run_command')
      assert.ok(write !== undefined && read !== undefined && run !== undefined)
      assert.equal((await callToolLikeBackend(write, { path: 'chat-one.txt', content: 'one' }, chat('chat-1'))).status, 200)
      // setsid nohup, and a second for it to detach: a plain background child ends when its command's terminal hangs up (README)
      await callToolLikeBackend(run, { command: 'setsid nohup sleep 200 >/dev/null 2>&1 & sleep 1; echo ok', wait: 5 }, chat('chat-1'))
      assert.equal((await callToolLikeBackend(read, { path: 'chat-one.txt' }, chat('chat-2'))).status, 404)
      const other = await callToolLikeBackend(run, { command: 'ls /mnt/data; ps -eo args', wait: 10 }, chat('chat-2'))
      const text = (other.body.output as Array<{ data: string }>).map((entry) => entry.data).join('')
      assert.doesNotMatch(text, /chat-one\.txt|sleep 200/)
      // the control: the same probe in the first chat's jail sees its own file and process
      const own = await callToolLikeBackend(run, { command: 'ls /mnt/data; ps -eo args', wait: 10 }, chat('chat-1'))
      const ownText = (own.body.output as Array<{ data: string }>).map((entry) => entry.data).join('')
      assert.match(ownText, /chat-one\.txt/)
      assert.match(ownText, /sleep 200/)
      assert.equal((await callToolLikeBackend(read, { path: 'chat-one.txt' }, chat('chat-1'))).body.content, 'one')
    })
  })
}

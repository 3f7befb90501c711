import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'
import { executeLikeOpenWebUI } from '../helpers/openwebui-client.ts'

/**
 * Open WebUI's code interpreter against Warden's Jupyter API, through a client that behaves exactly like
 * Open WebUI's (test/helpers/openwebui-client.ts): token and password modes, the behavioural rules of
 * ../shared/spec/openwebui-jupyter.md §6.4, and containment through this route.
 */

const TOKEN = 'owui-token-0123456789abcdef'
const PASSWORD = 'a-long-password'
const TIMEOUT_MS = 4_000

type Json = Record<string, any>

async function health (server: RunningServer): Promise<Json> {
  return await (await fetch(`${server.baseUrl}/health`)).json() as Json
}

for (const driver of availableDrivers()) {
  describe(`Open WebUI's Jupyter client against Warden (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startServer(suite, {
        driver,
        env: { JUPYTER_TOKEN: TOKEN, JUPYTER_PASSWORD: PASSWORD, JUPYTER_BASE_PATH: '/jupyter', EXEC_TIMEOUT_MS: String(TIMEOUT_MS), MEMORY_LIMIT_MB: '256', PIDS_LIMIT: '64' },
      })
    })
    const owui = (code: string, extra: Partial<Parameters<typeof executeLikeOpenWebUI>[1]> = {}) =>
      executeLikeOpenWebUI(code, { url: server.baseUrl, token: TOKEN, ...extra })

    it('token mode: print, an expression\'s value and a plot come back as Open WebUI reads them', async () => {
      const result = await owui('import matplotlib.pyplot as plt\nprint("hello")\nplt.plot([1, 3, 2]); plt.show()\n6 * 7')
      assert.equal(result.stdout, 'hello')
      assert.equal(result.stderr, '')
      const lines = result.result.split('\n')
      assert.equal(lines.length, 2, result.result.slice(0, 200))
      assert.match(lines[0] ?? '', /^data:image\/png;base64,[A-Za-z0-9+/=]+$/, 'one PNG, base64 without newlines')
      assert.equal(lines[1], '42')
      // outputs come before the idle that ends the client's loop; idle is the request's last message
      const ours = result.frames.filter((frame) => frame.message.parent_header?.msg_id !== undefined && frame.message.parent_header.msg_type === 'execute_request')
      assert.deepEqual(ours.map((frame) => frame.message.msg_type), ['status', 'execute_input', 'stream', 'display_data', 'execute_result', 'execute_reply', 'status'])
      assert.equal(ours.at(-1)?.message.content.execution_state, 'idle')
      for (const frame of result.frames) assert.equal(frame.message.msg_type, frame.message.header.msg_type, 'msg_type is at the top level too')
    })

    it('an exception comes back as Open WebUI shows it: the traceback in stderr', async () => {
      const result = await owui('x = 1\n1 / 0')
      assert.equal(result.stdout, '')
      assert.match(result.stderr, /ZeroDivisionError: division by zero/)
      assert.match(result.stderr, /line 2/)
    })

    it('the API works under JUPYTER_BASE_PATH too (Open WebUI ≥ 0.6.8 accepts a prefix)', async () => {
      const result = await executeLikeOpenWebUI('print(2 + 2)', { url: `${server.baseUrl}/jupyter`, token: TOKEN })
      assert.equal(result.stdout, '4')
    })

    it('password mode: GET login sets _xsrf, the form POST logs in, cookie and X-XSRFToken carry the session', async () => {
      const result = await executeLikeOpenWebUI('print("via password")', { url: server.baseUrl, password: PASSWORD })
      assert.equal(result.stdout, 'via password')
    })

    it('a wrong token and a wrong password are refused', async () => {
      await assert.rejects(executeLikeOpenWebUI('print(1)', { url: server.baseUrl, token: 'wrong-token-0000000000' }), /answered 401/)
      await assert.rejects(executeLikeOpenWebUI('print(1)', { url: server.baseUrl, password: 'not-the-password' }), /POST login answered 401/)
      const bare = await fetch(`${server.baseUrl}/api/kernels`, { method: 'POST' })
      assert.equal(bare.status, 401)
    })

    it('no message is over 1 MiB: 3 MiB of output arrive whole in smaller messages, a huge image becomes a note', async () => {
      const big = await owui('import sys\nfor i in range(3):\n    sys.stdout.write("y" * (1024 * 1024))')
      assert.equal(big.closeCode, null)
      assert.ok(big.frames.every((frame) => frame.bytes < 1024 * 1024), `largest frame ${Math.max(...big.frames.map((frame) => frame.bytes))}`)
      // the output cap (MAX_STDOUT_BYTES, 1 MiB) stops the cell and says so; everything up to it arrived
      assert.equal(big.stdout.length, 1024 * 1024)
      assert.match(big.stderr, /Output exceeded the limit of 1 MiB on stdout/)
      const noisy = await owui('import numpy as np, matplotlib.pyplot as plt\nplt.figure(figsize=(10, 10), dpi=100)\nplt.imshow(np.random.rand(1000, 1000))\nplt.show()')
      assert.equal(noisy.closeCode, null)
      assert.ok(noisy.frames.every((frame) => frame.bytes < 1024 * 1024))
      assert.ok(/^data:image\/png;base64,/.test(noisy.result) || /too large to show/.test(noisy.result), noisy.result.slice(0, 120))
    })

    it('Warden\'s own wall-clock limit ends a cell that keeps printing, as an error and then idle', async () => {
      const started = performance.now()
      const result = await owui('import time\nwhile True:\n    print("tick", flush=True)\n    time.sleep(0.2)')
      assert.ok(performance.now() - started < TIMEOUT_MS + 8_000)
      assert.match(result.stderr, /LimitExceeded: Execution exceeded the time limit of 4 s/)
      assert.match(result.stdout, /^tick/)
    })

    it('DELETE stops running work: the kernel\'s worker is gone at once', async () => {
      const before = (await health(server)).live.workers
      let kernelId = ''
      const running = owui('import time\ntime.sleep(30)', { keepKernel: true, timeoutMs: 15_000, onSent: (id) => { kernelId = id } })
      await sleep(700)
      const deleted = await fetch(`${server.baseUrl}/api/kernels/${kernelId}?token=${TOKEN}`, { method: 'DELETE' })
      assert.equal(deleted.status, 204)
      const result = await running
      assert.match(result.stderr, /KernelDied|timed out|Error/, 'the cell ended when its kernel was deleted')
      for (let attempt = 0; (await health(server)).live.workers > before && attempt < 50; attempt++) await sleep(100)
      assert.equal((await health(server)).live.workers, before)
      assert.equal((await fetch(`${server.baseUrl}/api/kernels/${kernelId}?token=${TOKEN}`)).status, 404)
    })

    it('containment through a kernel: no network, a read-only system, no secrets, no host processes', async () => {
      const result = await owui(`
import os, socket
def attempt(action):
    try:
        action()
        return "allowed"
    except OSError as error:
        return type(error).__name__
print(attempt(lambda: socket.create_connection(("1.1.1.1", 53), timeout=2)))
print(attempt(lambda: open("/usr/warden-was-here", "w")))
print(attempt(lambda: open("/etc/shadow")))
print(os.getuid(), len([p for p in os.listdir("/proc") if p.isdigit()]))
print(${JSON.stringify(TOKEN)} in str(dict(os.environ)))`)
      const lines = result.stdout.split('\n')
      assert.notEqual(lines[0], 'allowed', 'network')
      assert.notEqual(lines[1], 'allowed', 'system files')
      assert.notEqual(lines[2], 'allowed', '/etc/shadow')
      assert.equal(lines[3], '65534 1', 'uid 65534, alone in its pid namespace')
      assert.equal(lines[4], 'False', 'no token in the environment')
    })

    it('a memory bomb and a fork bomb in a kernel are stopped and explained; the next block runs', async () => {
      const memory = await owui('chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))')
      assert.match(memory.stderr, /MemoryError|memory limit of 256 MiB/)
      const forks = await owui('import os\nmade = 0\ntry:\n    while made < 1000:\n        if os.fork() == 0:\n            import time; time.sleep(20); os._exit(0)\n        made += 1\nexcept OSError as error:\n    print("stopped after", made, type(error).__name__)')
      assert.match(forks.stdout, /stopped after \d+ BlockingIOError/)
      assert.equal((await owui('print("still fine")')).stdout, 'still fine')
    })

    it('one kernel cannot see another kernel\'s files, and each block starts with empty state', async () => {
      await owui('open("/mnt/data/secret.txt", "w").write("mine")\nsecret_variable = 1')
      const other = await owui('import os\nprint(os.listdir("/mnt/data"), "secret_variable" in globals())')
      assert.equal(other.stdout, '[] False')
    })
  })
}

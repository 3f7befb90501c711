import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket from 'ws'
import { callToolLikeBackend, PaneClient, toolsFromSpec, type CallOptions, type Tool } from '../helpers/open-terminal-client.ts'
import { executeLikeOpenWebUI } from '../helpers/openwebui-client.ts'
import { api, availableDrivers, exec, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'
import { startAttackServer, type Json } from './helpers.ts'
import { assertSettled, assertSurfacesFree, health } from './settled.ts'

/**
 * Issues 9 and 21's chaos test: for ROUNDS rounds, attackers of every long-lived surface do random
 * damage (an /exec run to everything it inherited; a Jupyter kernel's cells doing the same, with
 * restarts, interrupts, floods and cut sockets; programmatic runs forging frames, abandoning pauses and
 * resuming badly; stateful sessions abusing their /mnt/data; a terminal's fork bomb and unread flood)
 * while eight other users run beside them, one of every kind: /exec in several languages, an upload
 * read and a download written, a stateful session, a programmatic run with a tool round, a kernel
 * cell, a terminal command. Every other user must get exactly its own answer, no zygote may exit, and
 * afterwards every slot, kernel, pause, terminal and workspace is free and /health's counts match the
 * host. Seeded, so a failure replays: CHAOS_SEED, CHAOS_ROUNDS.
 */

const ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 200)
const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 100_000)
const JUPYTER_TOKEN = 'chaos-jupyter-token-0123456789'
const PAUSE_TIMEOUT_S = 2
const TERMINAL_IDLE_S = 3

/** Each attack is a few lines of Python or Bash; `r` is a random number the attack may use. */
const PYTHON_ATTACKS: Array<(r: number) => string> = [
  (r) => `import os, socket\nfor fd in range(0, 10):\n    try:\n        socket.socket(fileno=os.dup(fd)).shutdown(${r % 3})\n    except OSError:\n        pass\nprint("after shutdown")`,
  () => 'import os\nos.closerange(0, 1024)\nprint("nobody reads this")',
  () => 'import os\nnull = os.open("/dev/null", os.O_RDWR)\nfor fd in (1, 2, 3, 4, 5):\n    os.dup2(null, fd)\nprint("into the void")',
  () => 'import os\nos.dup2(3, 1)\nos.dup2(3, 2)\nprint("stdout into the control socket")\nraise SystemExit(3)',
  () => 'import os\nos.dup2(1, 3)\nprint("control into stdout")',
  (r) => `import os\nos.write(3, os.urandom(${1 + (r % 5000)}))\nprint("garbage sent")`,
  () => 'import os\nos.write(3, b"X" + b"\\xff\\xff\\xff\\xff")\nprint("oversized header")',
  () => 'import os, struct\nchunk = struct.pack(">BI", 0x2b, 1 << 20) + b"+" * (1 << 20)\nfor _ in range(9):\n    os.write(3, chunk)\nprint("message over budget")',
  () => 'import json, os, struct\nbody = json.dumps({"exit_code": 0, "signal": None, "marker": "00" * 16}).encode()\nos.write(3, struct.pack(">BI", 0x58, len(body)) + body)\nos.write(1, bytes(16) + b"victim-forged\\n")\nprint("after a forged done")',
  (r) => `import os\nfor fd in (1, 2, 4, 5):\n    try:\n        os.write(fd, os.urandom(16) + b"victim-${r}\\n" + os.urandom(16))\n    except OSError:\n        pass`,
  () => 'import os, signal\nfor target in (os.getppid(), 1, -1, 0):\n    try:\n        os.kill(target, signal.SIGKILL)\n    except OSError:\n        pass\nprint("still here")',
  () => 'import os\nfor pid in range(1, 64):\n    try:\n        os.kill(pid, 9)\n    except OSError:\n        pass',
  (r) => `import os, sys\nsys.stdout.write("partial" * ${r % 2000})\nsys.stdout.flush()\nos._exit(${r % 256})`,
  (r) => `import os\nos.write(1, b"x" * ${(1 << 20) + (r % 100_000)})`,
  (r) => `import threading, os, time\ndef spam():\n    while True:\n        os.write(4, b"thread ${r}\\n")\nthreading.Thread(target=spam, daemon=True).start()\ntime.sleep(0.0${r % 9})\nos._exit(0)`,
]
const BASH_ATTACKS: Array<(r: number) => string> = [
  () => 'exec 1>&- 2>&- 3>&- 4>&- 5>&-\necho gone',
  (r) => `head -c ${1 + (r % 4000)} /dev/urandom >&3; echo garbage`,
  () => 'kill -9 -1; echo survived',
  () => 'kill -9 $$',
  (r) => `printf 'victim-${r}\\n' >&4; exit ${r % 256}`,
]

/** Programs of a tool-calling run that misuse its control socket (a `lookup` tool is offered). */
const PTC_FORGERIES: Array<(r: number) => string> = [
  () => 'import json, os\ncalls = [{"id": f"c{i}", "name": "lookup", "input": {}} for i in range(101)]\nbody = json.dumps({"type": "tool_calls", "calls": calls}).encode()\nos.write(3, b"M" + len(body).to_bytes(4, "big") + body)\nimport time\ntime.sleep(5)',
  () => 'import json, os\nbody = json.dumps({"type": "tool_calls", "calls": [{"id": "x", "name": "not_offered", "input": {}}]}).encode()\nos.write(3, b"M" + len(body).to_bytes(4, "big") + body)\nimport time\ntime.sleep(5)',
  () => 'import json, os\nbody = json.dumps({"type": "tool_calls", "calls": []}).encode()\nos.write(3, b"M" + len(body).to_bytes(4, "big") + body)\nimport time\ntime.sleep(5)',
  (r) => `import os\nos.write(3, os.urandom(${1 + (r % 3000)}))\nprint(await lookup(q=1))`,
  () => 'import json, os, threading, time\ndef forge():\n    time.sleep(0.2)\n    body = json.dumps({"type": "tool_calls", "calls": [{"id": "t", "name": "lookup", "input": {}}]}).encode()\n    os.write(3, b"M" + len(body).to_bytes(4, "big") + body)\nthreading.Thread(target=forge).start()\nprint(await lookup(q=1))',
  () => 'import os\nos.closerange(3, 1024)\nprint(await lookup(q=1))',
  (r) => `import os, signal\nprint(await lookup(q=${r}))\nos.kill(os.getppid(), signal.SIGKILL)`,
]

/** What a stateful session's attacker does to its own /mnt/data (the session persists between its calls). */
const WORKSPACE_ATTACKS: Array<(r: number) => string> = [
  () => 'import os\nfor name, target in (("passwd", "/etc/passwd"), ("environ", "/proc/self/environ"), ("up", "../../.."), ("loop", "loop"), ("root", "/")):\n    try:\n        os.symlink(target, f"/mnt/data/{name}")\n    except OSError:\n        pass\nprint("links left")',
  () => 'import os\nfor source in ("/etc/passwd", "/etc/hostname"):\n    try:\n        os.link(source, "/mnt/data/hard-" + os.path.basename(source))\n    except OSError:\n        pass\nprint("hard links tried")',
  (r) => `with open("/mnt/data/sparse.bin", "wb") as f:\n    f.truncate(${1 + (r % 1000)} << 30)\nprint("sparse")`,
  () => 'import os\nfd = os.open("/mnt/data/fallocated.bin", os.O_CREAT | os.O_WRONLY)\ntry:\n    os.posix_fallocate(fd, 0, 1 << 30)\nexcept OSError as error:\n    print(error)',
  () => 'chunk = b"z" * (1 << 20)\ntry:\n    with open("/mnt/data/huge.bin", "wb") as f:\n        while True:\n            f.write(chunk)\nexcept OSError:\n    print("quota")',
  () => 'import os, shutil\nfor name in os.listdir("/mnt/data"):\n    path = os.path.join("/mnt/data", name)\n    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)\nfor name in ("manifest.json", ".manifest", "files"):\n    os.makedirs(f"/mnt/data/{name}", exist_ok=True)\nprint("emptied")',
  () => 'import os\nfor name in os.listdir("/mnt/data"):\n    path = os.path.join("/mnt/data", name)\n    if os.path.isfile(path) and not os.path.islink(path):\n        os.unlink(path)\n        os.mkfifo(path)\nos.mkfifo("/mnt/data/fifo")\nprint("fifos")',
  (r) => `for i in range(${200 + (r % 300)}):\n    open(f"/mnt/data/many-{i}.txt", "w").write(str(i))\nprint("many")`,
  () => 'import os\nfor name in ("a\\nb.txt", "..", "\\u202etxt.exe", " ", "x" * 255):\n    try:\n        open(os.path.join("/mnt/data", name), "w").write("odd")\n    except OSError:\n        pass\nos.chmod("/mnt/data", 0o500)\nprint("odd names")',
  () => 'import os, threading, time\ndef churn():\n    while True:\n        try:\n            with open("/mnt/data/churn.txt", "w") as f:\n                f.write("x" * 4096)\n            os.replace("/mnt/data/churn.txt", "/mnt/data/churned.txt")\n        except OSError:\n            pass\nthreading.Thread(target=churn, daemon=True).start()\ntime.sleep(0.3)\nos._exit(0)',
]

type Kind = 'exec' | 'kernel' | 'ptc' | 'workspace' | 'terminal'
const ATTACKER_KINDS: Kind[] = ['exec', 'exec', 'kernel', 'kernel', 'ptc', 'ptc', 'workspace', 'workspace', 'terminal']

/** A seeded generator; its answers are the high 15 bits of an LCG, whose low bits repeat with short periods (the lowest alternates). */
function random (seed: number): () => number {
  let state = seed
  return () => {
    state = (state * 1103515245 + 12345) % 2 ** 31
    return state >>> 16
  }
}

type Answer = { status: number, body: Json }

async function postJson (server: RunningServer, route: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Answer> {
  const response = await api(server, route, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal })
  return { status: response.status, body: await response.json() as Json }
}

for (const driver of availableDrivers()) {
  describe(`chaos: attackers of every surface beside 8 other users of every kind for ${ROUNDS} rounds (${driver}, seed ${SEED})`, () => {
    let server: RunningServer
    let terminalBase: string
    let runCommand: Tool
    let compiledVictims: Array<{ lang: string, code: string }>
    const suite = suiteContext()
    const asTerminalUser = (userId: string): CallOptions => ({ baseUrl: terminalBase, key: server.apiKey, userId, floats: ['wait', 'timeout'] })
    const jupyterUrl = (path: string) => `${server.baseUrl}${path}?token=${JUPYTER_TOKEN}`

    before(async () => {
      server = await startAttackServer(suite, driver, {
        POOL_MIN: '6',
        POOL_MAX: '16',
        MAX_CONCURRENT_PER_USER: '0',
        EXEC_TIMEOUT_MS: '3000',
        MAX_QUEUE: '64',
        JUPYTER_TOKEN,
        MAX_KERNELS_PER_USER: '16',
        PTC_PAUSE_TIMEOUT: `${PAUSE_TIMEOUT_S}s`,
        TERMINAL_IDLE_TIMEOUT: `${TERMINAL_IDLE_S}s`,
      })
      terminalBase = `${server.baseUrl}/terminal`
      const found = toolsFromSpec(await (await fetch(`${terminalBase}/openapi.json`)).json() as Json).find((tool) => tool.name === 'run_command')
      assert.ok(found !== undefined, 'no run_command tool in the terminal\'s OpenAPI')
      runCommand = found
      // /exec victims beyond Python and JavaScript: each prints its first argument (the code stays the same, so compiles are cached)
      const available = new Set(((await health(server)).languages.available as Array<{ id: string }>).map((language) => language.id))
      compiledVictims = [
        { id: 'bash', lang: 'bash', code: 'echo "$1"' },
        { id: 'c', lang: 'c', code: '#include <stdio.h>\nint main(int argc, char **argv) { puts(argv[1]); return 0; }' },
        { id: 'php', lang: 'php', code: '<?php echo $argv[1], "\\n";' },
      ].filter((victim) => available.has(victim.id))
      assert.ok(compiledVictims.length > 0, `none of bash, c, php is available: ${[...available].join(', ')}`)
    })

    // --- the attackers ------------------------------------------------------------------------------

    /** An attacker's answers: every HTTP status it got, to check that none was a 5xx. */
    type Statuses = number[]

    const execAttacker = async (next: () => number, statuses: Statuses) => {
      const bash = next() % 4 === 0
      const catalogue = bash ? BASH_ATTACKS : PYTHON_ATTACKS
      const attacks = Array.from({ length: 1 + (next() % 2) }, () => catalogue[next() % catalogue.length]!(next()))
      const describe = `exec: ${attacks.join(' | ')}`
      return { describe, run: async () => { statuses.push((await exec(server, { lang: bash ? 'bash' : 'py', code: attacks.join('\n'), user_id: 'attacker-exec' })).status) } }
    }

    /** A kernel whose cell does an exec attack, with a flood, a restart, an interrupt or its socket cut mid-stream. */
    const kernelAttacker = async (next: () => number, statuses: Statuses) => {
      const cell = PYTHON_ATTACKS[next() % PYTHON_ATTACKS.length]!(next())
      const action = (['wait', 'restart', 'interrupt', 'cut', 'flood'] as const)[next() % 5]!
      const delayMs = next() % 300
      const run = async () => {
        const created = await fetch(jupyterUrl('/api/kernels'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
        statuses.push(created.status)
        if (created.status !== 201) return
        const { id } = await created.json() as { id: string }
        const socket = new WebSocket(`${server.baseUrl.replace(/^http/, 'ws')}/api/kernels/${id}/channels?token=${JUPYTER_TOKEN}`)
        const ended = new Promise<void>((resolve) => { socket.once('close', () => resolve()); socket.once('error', () => resolve()) })
        try {
          await Promise.race([new Promise((resolve) => socket.once('open', resolve)), ended])
          if (socket.readyState !== WebSocket.OPEN) return
          const idle = new Promise<void>((resolve) => {
            socket.on('message', (data: Buffer) => {
              const message = JSON.parse(String(data)) as Json
              if (message.msg_type === 'status' && message.content?.execution_state === 'idle') resolve()
            })
          })
          const request = (code: string, msgType = 'execute_request') => JSON.stringify({
            header: { msg_id: randomUUID(), msg_type: msgType, username: 'attacker', session: randomUUID(), date: '', version: '5.3' },
            parent_header: {},
            metadata: {},
            content: msgType === 'execute_request' ? { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: false } : { comm_id: randomUUID(), target_name: 'x', data: { blob: 'y'.repeat(1000) } },
            channel: 'shell',
          })
          socket.send(request(cell))
          const settledOrClosed = Promise.race([idle, ended, sleep(8000)])
          if (action === 'flood') {
            for (let i = 0; i < 200; i++) socket.send(request(`print(${i})`, i % 2 === 0 ? 'execute_request' : 'comm_open'))
            await sleep(delayMs)
          } else if (action === 'restart' || action === 'interrupt') {
            await sleep(delayMs)
            statuses.push((await fetch(jupyterUrl(`/api/kernels/${id}/${action}`), { method: 'POST' })).status)
            await Promise.race([settledOrClosed, sleep(4000)])
          } else if (action === 'cut') {
            await sleep(delayMs)
          } else {
            await settledOrClosed
          }
        } finally {
          socket.terminate()
          const deleted = await fetch(jupyterUrl(`/api/kernels/${id}`), { method: 'DELETE' })
          statuses.push(deleted.status)
        }
      }
      return { describe: `kernel ${action} after ${delayMs} ms: ${cell}`, run }
    }

    /** A tool-calling run that forges frames, abandons its pause, resumes it badly, or goes away mid-round. */
    const ptcAttacker = async (next: () => number, statuses: Statuses) => {
      const action = (['forge', 'abandon', 'bad-resume', 'gone', 'cancel'] as const)[next() % 5]!
      const forgery = PTC_FORGERIES[next() % PTC_FORGERIES.length]!(next())
      const r = next()
      const headers = { 'user-id': 'attacker-ptc' }
      const start = async (code: string, extra: Record<string, string> = {}, signal?: AbortSignal) => {
        const answer = await postJson(server, '/exec/programmatic', { code, tools: [{ name: 'lookup' }] }, { ...headers, ...extra }, signal)
        statuses.push(answer.status)
        return answer
      }
      const resume = async (token: string, results: unknown[], extra: Record<string, string> = {}) => {
        const answer = await postJson(server, '/exec/programmatic', { continuation_token: token, tool_results: results }, { ...headers, ...extra })
        statuses.push(answer.status)
        return answer
      }
      const run = async () => {
        if (action === 'forge') {
          const started = await start(forgery)
          if (started.body.status === 'tool_call_required') await resume(started.body.continuation_token, started.body.tool_calls.map((call: Json) => ({ call_id: call.id, result: 'x' })))
        } else if (action === 'abandon') {
          await start('print(await lookup(q=1))\nprint(await lookup(q=2))')
        } else if (action === 'bad-resume') {
          const started = await start('print(await lookup(q=1))')
          if (started.body.status !== 'tool_call_required') return
          const { continuation_token: token, tool_calls: [call] } = started.body
          await resume(token, [{ call_id: call.id, result: 1 }, { call_id: call.id, result: 2 }])
          await resume(token, [{ call_id: 'call_forged', result: 1 }])
          await resume(randomUUID(), [{ call_id: call.id, result: 1 }])
          await resume(token, [{ call_id: call.id, result: 1 }], { 'user-id': 'user-ptc' })
          if (r % 2 === 0) await resume(token, [{ call_id: call.id, result: 'at last' }])
        } else if (action === 'gone') {
          const controller = new AbortController()
          const started = start('import time\ntime.sleep(1)\nprint(await lookup(q=1))', {}, controller.signal).catch(() => null)
          await sleep(r % 400)
          controller.abort()
          await started
        } else {
          const started = await start('r = await lookup(q=1)\nimport time\ntime.sleep(0.2)\nprint(r)')
          if (started.body.status !== 'tool_call_required') return
          const requestId = `chaos-${r}`
          const resumed = resume(started.body.continuation_token, [{ call_id: started.body.tool_calls[0].id, result: 'x' }], { 'x-librechat-code-request-id': requestId })
          await sleep(r % 150)
          statuses.push((await postJson(server, '/exec/programmatic/cancel', { request_id: requestId }, headers)).status)
          await resumed
        }
      }
      return { describe: `ptc ${action}: ${action === 'forge' ? forgery : ''}`, run }
    }

    /** A stateful session's call abusing its /mnt/data; one of a few sessions, so what it leaves is there next time; sometimes two calls of one session at once. */
    const workspaceAttacker = async (next: () => number, statuses: Statuses) => {
      const attack = WORKSPACE_ATTACKS[next() % WORKSPACE_ATTACKS.length]!(next())
      const hint = `attacker-ws-${next() % 3}`
      const twice = next() % 4 === 0
      const call = async (code: string) => {
        const answer = await postJson(server, '/exec', { lang: 'py', code, runtime_session_hint: hint, user_id: 'attacker-ws' }, { 'x-codeapi-expected-profile': 'stateful' })
        statuses.push(answer.status)
      }
      const follow = 'import os\nfor name in sorted(os.listdir("/mnt/data"))[:20]:\n    try:\n        print(name, open(os.path.join("/mnt/data", name), "rb").read(64))\n    except OSError as error:\n        print(name, error)'
      return { describe: `workspace ${hint}${twice ? ' (twice at once)' : ''}: ${attack}`, run: async () => { await Promise.all(twice ? [call(attack), call(follow)] : [call(attack)]) } }
    }

    /** A terminal's pane running a fork bomb, or a flood nobody reads, then closed; or run_command doing the same. */
    const terminalAttacker = async (next: () => number, statuses: Statuses) => {
      const action = (['bomb', 'flood', 'command'] as const)[next() % 3]!
      const holdMs = 200 + (next() % 600)
      const run = async () => {
        if (action === 'command') {
          const answer = await callToolLikeBackend(runCommand, { command: ':(){ :|:& };: 2>/dev/null; yes flood | head -c 50000000', wait: 1 }, asTerminalUser('attacker-terminal'))
          statuses.push(answer.status)
          return
        }
        // the terminal's jail may still be full of the last bomb: a refusal (429) is an answer, not a failure
        const pane = await PaneClient.open(asTerminalUser('attacker-terminal')).catch((error: unknown) => {
          const refused = /POST \/api\/terminals answered (\d+)/.exec(String(error))
          if (refused === null) throw error
          statuses.push(Number(refused[1]))
          return null
        })
        if (pane === null) return
        statuses.push(200)
        pane.type(action === 'bomb' ? 'bomb(){ bomb|bomb& };bomb\n' : 'yes flood-flood-flood\n')
        if (action === 'flood') (pane.socket as unknown as { _socket: { pause: () => void } })._socket.pause()
        await sleep(holdMs)
        pane.socket.terminate()
      }
      return { describe: `terminal ${action} for ${holdMs} ms`, run }
    }

    const ATTACKERS: Record<Kind, (next: () => number, statuses: Statuses) => Promise<{ describe: string, run: () => Promise<void> }>> = {
      exec: execAttacker, kernel: kernelAttacker, ptc: ptcAttacker, workspace: workspaceAttacker, terminal: terminalAttacker,
    }

    // --- the victims: each resolves to a problem (a sentence) or null -----------------------------------

    let workspaceToken = ''
    const victims: Record<string, (token: string, round: number) => Promise<string | null>> = {
      'exec py': async (token) => {
        const { status, body } = await exec(server, { lang: 'py', code: `print(${JSON.stringify(token)})`, user_id: 'user-py' })
        return status === 200 && body.stdout === `${token}\n` && body.stderr === '' && body.status === 'ok' ? null : `answered ${status} ${JSON.stringify(body).slice(0, 300)}`
      },
      'exec js': async (token) => {
        const { status, body } = await exec(server, { lang: 'js', code: `console.log(${JSON.stringify(token)})`, user_id: 'user-js' })
        return status === 200 && body.stdout === `${token}\n` && body.stderr === '' && body.status === 'ok' ? null : `answered ${status} ${JSON.stringify(body).slice(0, 300)}`
      },
      'exec other': async (token, round) => {
        const victim = compiledVictims[round % compiledVictims.length]!
        const { status, body } = await exec(server, { lang: victim.lang, code: victim.code, args: [token], user_id: 'user-other' })
        return status === 200 && body.stdout === `${token}\n` && body.status === 'ok' ? null : `${victim.lang} answered ${status} ${JSON.stringify(body).slice(0, 300)}`
      },
      'upload and download': async (token) => {
        const upload = await uploadFile(server, 'in.txt', token, 'user-files')
        const { status, body } = await exec(server, {
          lang: 'py',
          code: 'data = open("in.txt").read()\nopen("out.txt", "w").write(data[::-1])\nprint(data)',
          user_id: 'user-files',
          files: [{ id: upload.fileId, storage_session_id: upload.sessionId, name: 'in.txt' }],
        })
        if (status !== 200 || body.stdout !== `${token}\n`) return `exec answered ${status} ${JSON.stringify(body).slice(0, 300)}`
        const out = (body.files as Json[]).find((file) => file.name === 'out.txt')
        if (out === undefined) return `no out.txt: ${JSON.stringify(body.files)}`
        const downloaded = await api(server, `/download/${out.storage_session_id as string}/${out.id as string}`, { headers: { 'user-id': 'user-files' } })
        const text = await downloaded.text()
        return downloaded.status === 200 && text === [...token].reverse().join('') ? null : `download answered ${downloaded.status} ${JSON.stringify(text.slice(0, 200))}`
      },
      'stateful session': async (token) => {
        const { status, body } = await postJson(server, '/exec', {
          lang: 'py',
          code: `import os\npath = "/mnt/data/mine.txt"\nprevious = open(path).read() if os.path.exists(path) else ""\nopen(path, "w").write(${JSON.stringify(token)})\nprint(previous, sorted(os.listdir("/mnt/data")))`,
          runtime_session_hint: `victim-ws-${driver}`,
          user_id: 'user-ws',
        }, { 'x-codeapi-expected-profile': 'stateful' })
        const expected = `${workspaceToken} ['mine.txt']\n`
        workspaceToken = token
        return status === 200 && body.stdout === expected && body.status === 'ok' ? null : `expected ${JSON.stringify(expected)}, answered ${status} ${JSON.stringify(body).slice(0, 300)}`
      },
      'programmatic run': async (token) => {
        const headers = { 'user-id': 'user-ptc' }
        const started = await postJson(server, '/exec/programmatic', { code: `r = await lookup(q=${JSON.stringify(token)})\nprint(r)`, tools: [{ name: 'lookup' }] }, headers)
        if (started.status !== 200 || started.body.status !== 'tool_call_required' || started.body.tool_calls.length !== 1 || started.body.tool_calls[0].input?.q !== token) {
          return `start answered ${started.status} ${JSON.stringify(started.body).slice(0, 300)}`
        }
        const done = await postJson(server, '/exec/programmatic', { continuation_token: started.body.continuation_token, tool_results: [{ call_id: started.body.tool_calls[0].id, result: token.toUpperCase() }] }, headers)
        return done.status === 200 && done.body.status === 'completed' && done.body.stdout === `${token.toUpperCase()}\n` ? null : `resume answered ${done.status} ${JSON.stringify(done.body).slice(0, 300)}`
      },
      'kernel cell': async (token) => {
        const result = await executeLikeOpenWebUI(`print(${JSON.stringify(token)})`, { url: server.baseUrl, token: JUPYTER_TOKEN, timeoutMs: 30_000 })
        return result.stdout === token && result.stderr === '' ? null : `the kernel answered ${JSON.stringify({ stdout: result.stdout, stderr: result.stderr, closeCode: result.closeCode }).slice(0, 300)}`
      },
      'terminal command': async (token) => {
        const answer = await callToolLikeBackend(runCommand, { command: `echo ${token}`, wait: 30 }, asTerminalUser('user-terminal'))
        const output = answer.status === 200 ? (answer.body.output as Array<{ data: string }>).map((entry) => entry.data).join('') : ''
        return answer.status === 200 && output === `${token}\r\n` ? null : `run_command answered ${answer.status} ${answer.text.slice(0, 300)}`
      },
    }

    test('every other user gets exactly its own answer, no zygote or server exits, and every slot, kernel, pause, terminal and workspace is free afterwards', { timeout: 30 * 60_000 }, async (t) => {
      const next = random(SEED + (driver === 'nsjail' ? 1 : 0))
      const start = await health(server)
      const attackerStatuses = new Map<string, number>()
      const attackerKinds = new Map<Kind, number>()
      const clientErrors: string[] = []
      for (let round = 0; round < ROUNDS; round++) {
        const kinds = Array.from({ length: 1 + (next() % 2) }, () => ATTACKER_KINDS[next() % ATTACKER_KINDS.length]!)
        const attackers: Array<{ kind: Kind, statuses: Statuses, describe: string, run: () => Promise<void> }> = []
        for (const kind of kinds) {
          const statuses: Statuses = []
          attackers.push({ kind, statuses, ...await ATTACKERS[kind](next, statuses) })
          attackerKinds.set(kind, (attackerKinds.get(kind) ?? 0) + 1)
        }
        const names = Object.keys(victims)
        const tokens = names.map((_, index) => `victim-${round}-${index}-${next().toString(36)}`)
        const [problems] = await Promise.all([
          Promise.all(names.map(async (name, index) => await victims[name]!(tokens[index]!, round).catch((error: unknown) => `threw ${String(error)}`))),
          ...attackers.map(async (attacker) => await attacker.run().catch((error: unknown) => {
            attacker.statuses.push(-1)
            clientErrors.push(`round ${round}, ${attacker.describe.slice(0, 80)}: ${String(error).slice(0, 200)}`)
          })),
        ])
        for (const { kind, statuses } of attackers) {
          for (const status of statuses) attackerStatuses.set(`${kind} ${status}`, (attackerStatuses.get(`${kind} ${status}`) ?? 0) + 1)
        }
        names.forEach((name, index) => {
          assert.equal(problems[index], null, `round ${round} (seed ${SEED}), victim ${name}: ${problems[index]}; beside: ${attackers.map((attacker) => attacker.describe).join(' | ').slice(0, 600)}`)
        })
        assert.equal(server.process.exitCode, null, 'the server exited')
      }
      t.diagnostic(`attacker rounds by kind ${JSON.stringify([...attackerKinds])}; their answers by kinds and status ${JSON.stringify([...attackerStatuses].sort())}; their own requests failed ${clientErrors.length} times: ${JSON.stringify(clientErrors.slice(0, 5))}`)
      assert.deepEqual([...attackerStatuses].filter(([key]) => Number(key.split(' ').at(-1)) >= 500), [], `attackers got ${JSON.stringify([...attackerStatuses])}`)
      // with 200 rounds every kind attacks, and each got in at least once; fewer rounds (CHAOS_ROUNDS=10) may leave one out
      if (ROUNDS >= 100) {
        for (const kind of new Set(ATTACKER_KINDS)) {
          assert.ok(attackerKinds.has(kind), `no ${kind} attacker ever ran`)
          assert.ok([...attackerStatuses].some(([key]) => key.startsWith(`${kind} 2`)), `no ${kind} attacker was ever let in: ${JSON.stringify([...attackerStatuses])}`)
        }
      }
      assert.ok(clientErrors.length < ROUNDS / 4, `attackers' own requests failed in many rounds: ${JSON.stringify(clientErrors.slice(0, 10))}`)

      // every workspace used answers another call: no lock is held by a call that ended
      for (const hint of ['attacker-ws-0', 'attacker-ws-1', 'attacker-ws-2', `victim-ws-${driver}`]) {
        const user = hint.startsWith('attacker') ? 'attacker-ws' : 'user-ws'
        const again = await postJson(server, '/exec', { lang: 'py', code: 'print("free")', runtime_session_hint: hint, user_id: user }, { 'x-codeapi-expected-profile': 'stateful' })
        assert.equal(again.status, 200, `${hint}: ${JSON.stringify(again.body).slice(0, 300)}`)
        assert.equal(again.body.stdout, 'free\n', `${hint}: ${JSON.stringify(again.body).slice(0, 300)}`)
      }
      await assertSurfacesFree(server, { jupyterToken: JUPYTER_TOKEN, kinds: ['kernel', 'ptc', 'terminal'], settleMs: (TERMINAL_IDLE_S + 5 + PAUSE_TIMEOUT_S) * 1000 + 20_000 })
      await assertSettled(server, start)
      const { status, body } = await exec(server, { lang: 'py', code: 'print(6 * 7)' })
      assert.equal(status, 200)
      assert.equal(body.stdout, '42\n')
    })
  })
}

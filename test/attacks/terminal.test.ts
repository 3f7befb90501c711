import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { availableDrivers, it, suiteContext, type RunningServer } from '../helpers/server.ts'
import { callToolLikeBackend, PaneClient, toolsFromSpec, type CallOptions, type Tool } from '../helpers/open-terminal-client.ts'
import { assertStillServing, hostProcessesOfJail, LIMITS, rssBytes, serverPid, startAttackServer, type Json } from './helpers.ts'

/**
 * Attackers with a terminal of their own (Open WebUI's Open Terminal path): what they run in the pane or
 * through run_command stays inside their jail's limits, does not cost the server memory it cannot bound,
 * does not outlive their terminal, and leaves other users' terminals working.
 */

/** a terminal nobody uses ends this long after its last use (the sweep runs every 5 s) */
const IDLE_S = 3

for (const driver of availableDrivers()) {
  describe(`terminal attackers (${driver})`, () => {
    let server: RunningServer
    let base: string
    let run: Tool
    const suite = suiteContext()
    const as = (userId: string): CallOptions => ({ baseUrl: base, key: server.apiKey, userId, floats: ['wait', 'timeout'] })
    const command = async (userId: string, text: string, extra: Json = {}): Promise<{ status: number, body: Json, output: string }> => {
      const answer = await callToolLikeBackend(run, { command: text, wait: 20, ...extra }, as(userId))
      const output = answer.status === 200 ? (answer.body.output as Array<{ data: string }>).map((entry) => entry.data).join('') : ''
      return { status: answer.status, body: answer.body, output }
    }
    /** another user's terminal answers while an attacker does its worst */
    const assertNeighbourWorks = async () => {
      const neighbour = await command('neighbour', 'echo fine-$((20+22))')
      assert.equal(neighbour.status, 200, JSON.stringify(neighbour.body))
      assert.equal(neighbour.output, 'fine-42\r\n')
    }

    before(async () => {
      server = await startAttackServer(suite, driver, { TERMINAL_IDLE_TIMEOUT: `${IDLE_S}s` })
      base = `${server.baseUrl}/terminal`
      const spec = await (await fetch(`${base}/openapi.json`)).json() as Json
      const found = toolsFromSpec(spec).find((tool) => tool.name === 'run_command')
      assert.ok(found !== undefined)
      run = found
    })

    it('a fork bomb typed into the pane is held by pids.max; closing the pane ends it; the neighbour is unaffected', async () => {
      const pane = await PaneClient.open(as('bomber'))
      pane.type('echo armed; :(){ :|:& };:\n')
      await pane.until(/\narmed/)
      await sleep(2000)
      await assertNeighbourWorks()
      const during = hostProcessesOfJail(server).length
      pane.close()
      await pane.closed()
      // the pane's session gets SIGHUP, then SIGKILL after 3 s: the bomb's processes are in it
      let left = Number.POSITIVE_INFINITY
      for (let attempt = 0; attempt < 40 && left > 2; attempt++) {
        await sleep(500)
        const ps = await command('bomber', 'ps -e --no-headers | wc -l')
        left = ps.status === 200 && ps.body.exit_code === 0 ? Number(ps.output.trim()) : Number.POSITIVE_INFINITY
      }
      // left: the terminal's own loop, and the ps and wc of the count itself, at most a few more
      assert.ok(left <= 5, `${left} processes left in the bomber's jail after the pane closed (${during} jail processes during the bomb, pids.max ${LIMITS.pidsMax})`)
      await assertStillServing(server)
    })

    it('a pane flooding output that nobody reads is stopped at its window: the server\'s memory stays bounded', async () => {
      const pane = await PaneClient.open(as('flooder'))
      pane.type('echo go; yes flood-flood-flood-flood\n')
      await pane.until(/\ngo/)
      // the client stops reading: TCP fills, WebSocket writes stop completing, the jail gets no more credit
      const socket = (pane.socket as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
      socket.pause()
      const pid = serverPid(server)
      await sleep(1000)
      const before = rssBytes(pid)
      await sleep(4000)
      const after = rssBytes(pid)
      await assertNeighbourWorks()
      assert.ok(after - before < 32 * 1024 * 1024, `the server grew by ${Math.round((after - before) / 1048576)} MiB while nobody read the flood`)
      socket.resume()
      pane.close()
      await pane.closed()
    })

    it('a huge paste (4 MiB of keystrokes) reaches the program whole, at the pace the terminal takes it', async () => {
      const pane = await PaneClient.open(as('paster'))
      const size = 4 * 1024 * 1024
      pane.type(`stty raw -echo; head -c ${size} | wc -c; stty sane\n`)
      await sleep(500)
      const chunk = Buffer.alloc(1024 * 1024, 'p')
      const pid = serverPid(server)
      const before = rssBytes(pid)
      for (let sent = 0; sent < size; sent += chunk.length) pane.socket.send(chunk, { binary: true })
      await pane.until(new RegExp(`\\b${size}\\b`), 60_000)
      assert.ok(rssBytes(pid) - before < 64 * 1024 * 1024, 'the paste was held in the server\'s memory')
      await assertNeighbourWorks()
      pane.close()
      await pane.closed()
    })

    it('a detached nohup child outlives its command but not its terminal: it is killed when the terminal ends', async () => {
      const marker = 'sleep 987'
      // the pause lets the child leave the command's session first: a command's terminal hangs up when its
      // shell exits, and SIGHUP reaches whatever is still in its foreground group (open-terminal alike)
      const started = await command('detacher', `setsid nohup ${marker} >/dev/null 2>&1 & sleep 1; echo detached`)
      assert.match(started.output, /detached/)
      assert.equal(started.body.status, 'done')
      const alive = await command('detacher', `ps -eo args | grep -c "^${marker}"`)
      assert.equal(alive.output.trim(), '1', 'the detached child runs after its command ended')
      assert.ok(hostProcessesOfJail(server).some((process) => process.cmdline === marker), 'the host sees the detached child')
      // nobody uses the terminal: it ends after TERMINAL_IDLE_TIMEOUT, and its pid namespace with it
      let survivors = 1
      for (let attempt = 0; attempt < 60 && survivors > 0; attempt++) {
        await sleep(500)
        survivors = hostProcessesOfJail(server).filter((process) => process.cmdline === marker).length
      }
      assert.equal(survivors, 0, 'the detached child outlived its terminal')
      // the next call starts the terminal again, with its home, without the child
      const again = await command('detacher', `ps -eo args | grep -c "^${marker}" || true`)
      assert.equal(again.output.trim(), '0')
    })

    it('a jail that opens pseudo-terminals in a loop stops at its own devpts max, not at the host-wide pty limit', async () => {
      // every devpts instance but the host's draws on kernel.pty.max minus kernel.pty.reserve: one jail
      // opening all it can would leave no terminal for anyone else's jail (or container) on the host
      const hog = await command('pty-hog', 'python3 -c "import os\nn = 0\ntry:\n    while True:\n        os.openpty(); n += 1\nexcept OSError as e:\n    print(n, e.errno)"')
      const [opened = Number.NaN] = hog.output.trim().split(/\s+/).map(Number)
      assert.ok(opened >= 8 && opened <= 128, `the jail opened ${opened} pseudo-terminals: ${hog.output.slice(0, 200)}`)
      await assertNeighbourWorks()
      const pane = await PaneClient.open(as('neighbour'))
      pane.type('echo pane-$((6*7))\n')
      await pane.until(/pane-42/)
      pane.close()
    })

    it('a terminal whose processes fill pids.max answers a new command or pane with a 429 that says so, not a 400 of an errno', async () => {
      // found by the chaos test: fork() failing with EAGAIN under the bomb came back as 400 invalid_request
      // "Resource temporarily unavailable", as if the request were wrong
      const pane = await PaneClient.open(as('pid-filler'))
      pane.type('echo armed; bomb(){ bomb|bomb& }; bomb\n')
      await pane.until(/\narmed/)
      await sleep(1000)
      const answers: Array<{ status: number, body: Json }> = []
      const headers = { authorization: `Bearer ${server.apiKey}`, 'x-user-id': 'pid-filler' }
      for (let attempt = 0; attempt < 30 && !answers.some((answer) => answer.status === 429); attempt++) {
        const answer = await command('pid-filler', 'echo squeezed-in', { wait: 2 })
        answers.push({ status: answer.status, body: answer.body })
        const opened = await fetch(`${base}/api/terminals`, { method: 'POST', headers })
        const body = await opened.json() as Json
        answers.push({ status: opened.status, body })
        // a pane opened before the bomb filled pids.max is closed at once: three of them would reach
        // TERMINAL_MAX_SHELLS, whose 429 is another limit than the one under test
        if (opened.status === 200) await fetch(`${base}/api/terminals/${String(body.id)}`, { method: 'DELETE', headers })
        await sleep(100)
      }
      pane.close()
      const refused = answers.filter((answer) => answer.status !== 200)
      assert.ok(refused.length > 0, `nothing was ever refused under the bomb: ${JSON.stringify(answers).slice(0, 500)}`)
      for (const answer of refused) {
        assert.equal(answer.status, 429, JSON.stringify(answer.body))
        assert.equal(answer.body.error, 'rate_limited')
        assert.match(answer.body.message, /limit of processes/)
      }
      await assertNeighbourWorks()
    })

    it('a command that floods its own output is capped (the log keeps its newer part) and killed at its timeout', async () => {
      const flood = await command('logflood', 'yes log-flood-log-flood', { timeout: 2, wait: 20 })
      assert.equal(flood.status, 200)
      assert.equal(flood.body.status, 'killed')
      assert.ok(flood.output.length <= LIMITS.maxStdoutBytes + 8192, `${flood.output.length} bytes of output in one answer`)
      assert.match(flood.output, /time limit of 2 s/)
      await assertNeighbourWorks()
    })
  })
}

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { before, describe } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { availableDrivers, it, suiteContext, type RunningServer } from '../helpers/server.ts'
import { callToolLikeBackend, PaneClient, toolsFromSpec, type CallOptions, type Tool } from '../helpers/open-terminal-client.ts'
import { assertStillServing, hostProcessesOfJail, startAttackServer, type Json } from './helpers.ts'

/**
 * Chaos around Open WebUI's terminals: a terminal's jail killed from outside in the middle of a command,
 * a stampede of first calls for one user, a pane's connection cut while it streams. Each ends in a clear
 * answer (never a hang), one jail per user, nothing left running, and the user's home intact.
 */

for (const driver of availableDrivers()) {
  describe(`terminal chaos (${driver})`, () => {
    let server: RunningServer
    let base: string
    let tools: Map<string, Tool>
    const suite = suiteContext()
    const as = (userId: string): CallOptions => ({ baseUrl: base, key: server.apiKey, userId, floats: ['wait', 'timeout'] })
    const call = async (name: string, args: Json, userId: string) => {
      const tool = tools.get(name)
      assert.ok(tool !== undefined)
      return await callToolLikeBackend(tool, args, as(userId))
    }
    const output = (body: Json) => (body.output as Array<{ data: string }>).map((entry) => entry.data).join('')
    const terminalsLive = async () => ((await (await fetch(`${server.baseUrl}/health`)).json() as Json).live?.by_kind?.terminal ?? 0) as number

    before(async () => {
      server = await startAttackServer(suite, driver)
      base = `${server.baseUrl}/terminal`
      tools = new Map(toolsFromSpec(await (await fetch(`${base}/openapi.json`)).json() as Json).map((tool) => [tool.name, tool]))
    })

    it('the terminal\'s jail killed from the host mid-command: the call answers, the next starts a new jail with the saved home', async () => {
      assert.equal((await call('write_file', { path: 'saved.txt', content: 'before the crash' }, 'victim')).status, 200)
      // a checkpoint runs after each change: give it a moment before the crash
      await sleep(1000)
      const running = call('run_command', { command: 'exec -a chaos-victim-marker sleep 300', wait: 30 }, 'victim')
      let victim: { pid: number } | undefined
      for (let attempt = 0; attempt < 40 && victim === undefined; attempt++) {
        await sleep(250)
        victim = hostProcessesOfJail(server).find((process) => process.cmdline.startsWith('chaos-victim-marker'))
      }
      assert.ok(victim !== undefined, 'the command never showed up on the host')
      const worker = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${victim.pid}/status`, 'utf8'))?.[1])
      assert.ok(worker > 1, 'no parent (the terminal loop) for the command')
      process.kill(worker, 'SIGKILL')
      const answer = await running
      assert.ok(answer.status === 503 || (answer.status === 200 && answer.body.status !== 'running'), `the call answered ${answer.status}: ${answer.text.slice(0, 300)}`)
      if (answer.status === 503) assert.equal(answer.body.error, 'jail_unavailable')
      const read = await call('read_file', { path: 'saved.txt' }, 'victim')
      assert.equal(read.status, 200, read.text)
      assert.equal(read.body.content, 'before the crash')
      assert.ok(!hostProcessesOfJail(server).some((process) => process.cmdline.startsWith('chaos-victim-marker')), 'the command outlived its jail')
      await assertStillServing(server)
    })

    it('twenty first calls of one user at once start exactly one terminal jail', async () => {
      const before = await terminalsLive()
      const answers = await Promise.all(Array.from({ length: 20 }, async (_, index) => await call('run_command', { command: `echo call-${index} > call-${index}.txt; echo $$`, wait: 20 }, 'stampede')))
      for (const answer of answers) assert.equal(answer.status, 200, answer.text.slice(0, 300))
      assert.equal(await terminalsLive(), before + 1)
      const listed = await call('list_files', {}, 'stampede')
      assert.equal(listed.body.entries.filter((entry: Json) => String(entry.name).startsWith('call-')).length, 20)
    })

    it('a pane whose connection is cut while it streams: its shell and what it ran end; the server serves on', async () => {
      const pane = await PaneClient.open(as('cutter'))
      pane.type('echo streaming; exec -a chaos-cut-marker yes\n')
      await pane.until(/\nstreaming/)
      await sleep(500)
      assert.ok(hostProcessesOfJail(server).some((process) => process.cmdline.startsWith('chaos-cut-marker')), 'the streaming program is not running')
      pane.socket.terminate()
      let left = 1
      for (let attempt = 0; attempt < 40 && left > 0; attempt++) {
        await sleep(250)
        left = hostProcessesOfJail(server).filter((process) => process.cmdline.startsWith('chaos-cut-marker')).length
      }
      assert.equal(left, 0, 'the pane\'s program outlived its connection')
      await assertStillServing(server)
      const again = await call('run_command', { command: 'echo still-mine' }, 'cutter')
      assert.equal(output(again.body), 'still-mine\r\n')
    })
  })
}

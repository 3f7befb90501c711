import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { api, availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import { startAttackServer } from './helpers.ts'
import { assertSettled, health } from './settled.ts'

/**
 * Continuation tokens under attack (issue 21, item 3): two resumes raced on one token, duplicate and
 * foreign call ids, another tenant's user, a flood of calls in one round. Exactly one resume wins; every
 * other answer is the same 404 or a 400 that leaves the run paused; afterwards nothing is left paused.
 */

async function post (server: RunningServer, body: unknown, user = 'alice-c21'): Promise<{ status: number, body: Record<string, any> }> {
  const response = await api(server, '/exec/programmatic', { method: 'POST', headers: { 'content-type': 'application/json', 'user-id': user }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  return { status: response.status, body: await response.json() as Record<string, any> }
}

async function paused (server: RunningServer, code = 'print(await lookup(q=1))'): Promise<{ token: string, callId: string }> {
  const started = await post(server, { code, tools: [{ name: 'lookup' }] })
  assert.equal(started.body.status, 'tool_call_required', JSON.stringify(started.body))
  return { token: started.body.continuation_token, callId: started.body.tool_calls[0].id }
}

for (const driver of availableDrivers()) {
  describe(`continuation tokens under attack (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => { server = await startAttackServer(suite, driver, { PTC_PAUSE_TIMEOUT: '3s' }) })

    test('two resumes raced on one token: one completes, the other is the 404 of an unknown token', async () => {
      const start = await health(server)
      for (let i = 0; i < 5; i++) {
        const { token, callId } = await paused(server)
        const results = [{ call_id: callId, result: `r${i}` }]
        const answers = await Promise.all([post(server, { continuation_token: token, tool_results: results }), post(server, { continuation_token: token, tool_results: results })])
        const statuses = answers.map((answer) => answer.status).sort()
        assert.deepEqual(statuses, [200, 404], JSON.stringify(answers))
        assert.equal(answers.find((answer) => answer.status === 200)?.body.stdout, `r${i}\n`)
      }
      await assertSettled(server, start)
    })

    test('duplicate, foreign and missing call ids are 400 and leave the run paused; another user is 404; the owner then completes it', async () => {
      const { token, callId } = await paused(server)
      const duplicate = await post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: 1 }, { call_id: callId, result: 2 }] })
      assert.equal(duplicate.status, 400, JSON.stringify(duplicate.body))
      const foreign = await post(server, { continuation_token: token, tool_results: [{ call_id: 'call_999', result: 1 }] })
      assert.equal(foreign.status, 400)
      const stolen = await post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: 1 }] }, 'mallory-c21')
      assert.equal(stolen.status, 404)
      const deep = await post(server, `{"continuation_token": ${JSON.stringify(token)}, "tool_results": [{"call_id": ${JSON.stringify(callId)}, "result": ${'['.repeat(5000)}${']'.repeat(5000)}}]}`)
      assert.ok(deep.status < 500, `deep JSON answered ${deep.status}`)
      if (deep.status !== 200) {
        const done = await post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: 'ok' }] })
        assert.equal(done.body.stdout, 'ok\n', JSON.stringify(done.body))
      }
    })

    test('a round of 101 calls, forged on the control socket, stops the run with an error, not the server', async () => {
      const start = await health(server)
      const flood = 'import json, os, time\ncalls = [{"id": f"c{i}", "name": "lookup", "input": {}} for i in range(101)]\nbody = json.dumps({"type": "tool_calls", "calls": calls}).encode()\nos.write(3, b"M" + len(body).to_bytes(4, "big") + body)\ntime.sleep(5)'
      const answer = await post(server, { code: flood, tools: [{ name: 'lookup' }] })
      assert.equal(answer.status, 200, JSON.stringify(answer.body))
      assert.equal(answer.body.status, 'error')
      assert.match(answer.body.stderr, /more than 100 tool calls/)
      await assertSettled(server, start)
    })
  })
}

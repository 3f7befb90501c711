import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { bearer, createSigningKey, mintToken, type SigningKey } from '../helpers/jwt.ts'
import { api, availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import { rssBytes, serverPid, startAttackServer } from './helpers.ts'
import { assertSettled, health } from './settled.ts'

/**
 * Continuation tokens under attack (issue 21, item 3): two resumes raced on one token, duplicate and
 * foreign call ids, another tenant's user, a flood of calls in one round. Exactly one resume wins; every
 * other answer is the same 404 or a 400 that leaves the run paused; afterwards nothing is left paused.
 */

type Answer = { status: number, body: Record<string, any> }

/** POST /exec/programmatic as `user` (a User-Id header beside the API key), or with `headers` instead (a JWT). */
async function post (server: RunningServer, body: unknown, user = 'alice-c21', headers: Record<string, string> = { 'user-id': user }): Promise<Answer> {
  const response = await api(server, '/exec/programmatic', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  return { status: response.status, body: await response.json() as Record<string, any> }
}

async function paused (server: RunningServer, code = 'print(await lookup(q=1))', headers?: Record<string, string>): Promise<{ token: string, callId: string }> {
  const started = await post(server, { code, tools: [{ name: 'lookup' }] }, undefined, headers)
  assert.equal(started.body.status, 'tool_call_required', JSON.stringify(started.body))
  return { token: started.body.continuation_token, callId: started.body.tool_calls[0].id }
}

for (const driver of availableDrivers()) {
  describe(`continuation tokens under attack (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    let key: SigningKey
    const tenantOf = async (tenantId: string) => bearer(await mintToken(key, { userId: 'same-user-c21', tenantId }))
    before(async () => {
      key = await createSigningKey()
      server = await startAttackServer(suite, driver, { PTC_PAUSE_TIMEOUT: '3s', AUTH: 'api-key,jwt', JWT_PUBLIC_KEYS: key.publicPem })
    })

    test('two resumes raced on one token: one completes, the other is the 404 of an unknown token', async () => {
      const start = await health(server)
      for (let i = 0; i < 5; i++) {
        const { token, callId } = await paused(server)
        const results = [{ call_id: callId, result: `r${i}` }]
        const answers = await Promise.all([post(server, { continuation_token: token, tool_results: results }), post(server, { continuation_token: token, tool_results: results })])
        const statuses = answers.map((answer) => answer.status).sort()
        assert.deepEqual(statuses, [200, 404], JSON.stringify(answers))
        assert.equal(answers.find((answer) => answer.status === 200)?.body.stdout, `r${i}\n`, JSON.stringify(answers))
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

    test('cancel raced with resume: either the cancel finds the round in flight and the answer is the cancel, or it finds nothing and the run completes; never both, never paused after', async () => {
      const start = await health(server)
      const outcomes = { cancelled: 0, completed: 0 }
      for (let i = 0; i < 8; i++) {
        const { token, callId } = await paused(server, `r = await lookup(q=1)\nimport time\ntime.sleep(${(i % 4) * 0.1})\nprint(r)`)
        const requestId = `race-${driver}-${i}`
        const resume = post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: `r${i}` }] }, undefined, { 'user-id': 'alice-c21', 'x-librechat-code-request-id': requestId })
        await sleep((i % 3) * 40)
        const cancel = await api(server, '/exec/programmatic/cancel', { method: 'POST', headers: { 'content-type': 'application/json', 'user-id': 'alice-c21' }, body: JSON.stringify({ request_id: requestId }) })
        assert.equal(cancel.status, 200)
        const { cancelled } = await cancel.json() as { cancelled: boolean }
        const answer = await resume
        assert.equal(answer.status, 200, JSON.stringify(answer.body))
        if (cancelled) {
          assert.equal(answer.body.status, 'error', `cancelled, yet the resume answered ${JSON.stringify(answer.body)}`)
          assert.match(answer.body.stderr, /The client cancelled the request\./)
          outcomes.cancelled++
        } else {
          assert.equal(answer.body.status, 'completed', `not cancelled, yet the resume answered ${JSON.stringify(answer.body)}`)
          assert.equal(answer.body.stdout, `r${i}\n`)
          outcomes.completed++
        }
        const again = await post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: 'late' }] })
        assert.equal(again.status, 404, 'the token still continues something')
      }
      // the delays are chosen so that both outcomes happen; one alone would mean the race was never run
      assert.ok(outcomes.cancelled > 0, `no cancel ever found its round: ${JSON.stringify(outcomes)}`)
      const after = await assertSettled(server, start)
      assert.equal(after.live.by_kind.ptc ?? 0, 0, `runs are left: ${JSON.stringify(after.live)}`)
    })

    test('a 10 MiB tool result reaches the program whole; a 20 MiB one is a 413 that leaves the run paused; server memory stays bounded', async () => {
      const start = await health(server)
      const pid = serverPid(server)
      const baseline = rssBytes(pid)
      let peak = baseline
      const sampling = { on: true }
      const sampler = (async () => { while (sampling.on) { peak = Math.max(peak, rssBytes(pid)); await sleep(20) } })()
      try {
        const big = 'x'.repeat(10 << 20)
        const first = await paused(server, 'r = await lookup(q=1)\nprint(len(r), r[:3], r[-3:])')
        const answer = await post(server, { continuation_token: first.token, tool_results: [{ call_id: first.callId, result: big }] })
        assert.equal(answer.status, 200, JSON.stringify(answer.body).slice(0, 500))
        assert.equal(answer.body.status, 'completed', JSON.stringify(answer.body).slice(0, 500))
        assert.equal(answer.body.stdout, `${10 << 20} xxx xxx\n`)

        const second = await paused(server)
        const huge = await post(server, { continuation_token: second.token, tool_results: [{ call_id: second.callId, result: big + big }] })
        assert.equal(huge.status, 413, JSON.stringify(huge.body).slice(0, 500))
        assert.equal(typeof huge.body.error, 'string')
        assert.equal(typeof huge.body.message, 'string')
        assert.equal((await health(server)).live.by_kind.ptc, 1, 'the refused continuation ended the run')
        const done = await post(server, { continuation_token: second.token, tool_results: [{ call_id: second.callId, result: 'small' }] })
        assert.equal(done.body.stdout, 'small\n', JSON.stringify(done.body))
      } finally {
        sampling.on = false
        await sampler
      }
      // the body (10 MiB), its parse and one encoded copy for the worker: a few times the result, not more
      assert.ok(peak - baseline < 256 << 20, `the server grew by ${Math.round((peak - baseline) / 2 ** 20)} MiB for a 10 MiB result`)
      await assertSettled(server, start)
    })

    test('a program that keeps its round open past PTC_PAUSE_TIMEOUT (busy threads and a child that ignores SIGTERM) is stopped as expired; its token is then the 404 of an unknown one', async () => {
      const start = await health(server)
      const busy = [
        'import os, signal, subprocess, sys, threading, time',
        'subprocess.Popen([sys.executable, "-c", "import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(0.05)"], start_new_session=True)',
        'def spin():',
        '    while True:',
        '        print("still busy", flush=True)',
        '        time.sleep(0.05)',
        'threading.Thread(target=spin, daemon=True).start()',
        'print(await lookup(q=1))',
      ].join('\n')
      const { token, callId } = await paused(server, busy)
      assert.equal((await health(server)).live.by_kind.ptc, 1)
      const deadline = Date.now() + 20_000
      while (((await health(server)).live.by_kind.ptc ?? 0) !== 0) {
        assert.ok(Date.now() < deadline, 'the paused run outlived its pause limit by far')
        await sleep(200)
      }
      const late = await post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: 'late' }] })
      const unknown = await post(server, { continuation_token: 'A'.repeat(43), tool_results: [{ call_id: callId, result: 'late' }] })
      assert.equal(late.status, 404)
      assert.deepEqual(late.body, unknown.body)
      const after = await assertSettled(server, start)
      assert.ok((after.live.ended.expired ?? 0) > (start.live.ended.expired ?? 0), `the run did not end as expired: ${JSON.stringify(after.live.ended)}`)
    })

    test('a resumed round that runs past PTC_PAUSE_TIMEOUT is bound by the execution time limit, and answers its error', async () => {
      const start = await health(server)
      const { token, callId } = await paused(server, 'r = await lookup(q=1)\nimport time\nprint(r, flush=True)\ntime.sleep(60)')
      const answer = await post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: 'go' }] })
      assert.equal(answer.status, 200, JSON.stringify(answer.body))
      assert.equal(answer.body.status, 'error')
      assert.equal(answer.body.error, 'Time limit exceeded')
      assert.equal(answer.body.stdout, 'go\n')
      await assertSettled(server, start)
    })

    test('a token of another tenant (the same user id in a JWT of another tenant_id, or the API key) is answered exactly as a made-up token', async () => {
      const start = await health(server)
      const owner = await tenantOf('tenant-a-c21')
      const { token, callId } = await paused(server, 'print(await lookup(q=1))', owner)
      const results = [{ call_id: callId, result: 'stolen' }]
      const madeUp = await post(server, { continuation_token: 'B'.repeat(43), tool_results: results }, undefined, owner)
      assert.equal(madeUp.status, 404)
      const attempts = [
        await post(server, { continuation_token: token, tool_results: results }, undefined, await tenantOf('tenant-b-c21')),
        await post(server, { continuation_token: token, tool_results: results }, undefined, await tenantOf('legacy')),
        await post(server, { continuation_token: token, tool_results: results }, 'same-user-c21'),
        await post(server, { continuation_token: token, tool_results: results, user_id: 'same-user-c21' }, undefined, {}),
      ]
      for (const attempt of attempts) {
        assert.equal(attempt.status, 404, JSON.stringify(attempt.body))
        assert.deepEqual(attempt.body, madeUp.body, 'another tenant learns that the token exists')
      }
      const done = await post(server, { continuation_token: token, tool_results: [{ call_id: callId, result: 'mine' }] }, undefined, owner)
      assert.equal(done.body.stdout, 'mine\n', JSON.stringify(done.body))
      await assertSettled(server, start)
    })
  })
}

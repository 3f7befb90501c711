import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { api, availableDrivers, exec, startServer } from '../helpers/server.ts'

for (const driver of availableDrivers()) {
  describe(`smoke on ${driver}`, () => {
    test('print(1) through POST /v1/exec answers 1 with status ok', async (t) => {
      const server = await startServer(t, { driver })
      const { status, body } = await exec(server, { lang: 'py', code: 'print(1)' })
      assert.equal(status, 200)
      assert.equal(body.stdout, '1\n')
      assert.equal(body.status, 'ok')
      assert.match(body.session_id, /^[A-Za-z0-9_-]{21}$/)
    })

    test('the startup self-test ran every canary in a real jail and /health shows it passed', async (t) => {
      const server = await startServer(t, { driver })
      const health = await (await api(server, '/health')).json() as {
        status: string, jail: { driver: string }, self_test: { passed: boolean, checks: Array<{ name: string, ok: boolean }> }
      }
      assert.equal(health.status, 'ok')
      assert.equal(health.jail.driver, driver)
      assert.equal(health.self_test.passed, true)
      const isolation = ['runs as uid 65534 inside', 'no capabilities', 'no_new_privs set', 'seccomp filter active', 'read-only system', 'no network', 'own pid namespace']
      // the data zygote's jail and the light zygote's (LIGHT_ZYGOTE, on by default) are each checked
      assert.deepEqual(health.self_test.checks.map((check) => [check.name, check.ok]), [
        ...isolation.map((name) => [name, true]),
        ...isolation.map((name) => [`${name} (light workers)`, true]),
        ['memory limit enforced', true], ['pids limit enforced', true], ['no process outlives its execution', true],
      ])
    })
  })
}

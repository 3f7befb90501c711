import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { availableDrivers, exec, startServer } from '../helpers/server.ts'

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
  })
}

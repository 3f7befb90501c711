import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { api, availableDrivers, exec, it, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'

/**
 * Issue 9, finding 4. Inputs named `a` and `a/b` in one `files[]` cannot both exist under /mnt/data:
 * the worker failed to stage them and the request got 503 jail_unavailable and cost a worker. It is
 * the request's mistake, so it gets a 400 before any jail work.
 */

type Json = Record<string, any>

async function acquisitions (server: RunningServer): Promise<number> {
  const report = await (await api(server, '/health')).json() as Json
  return report.pool.acquired_warm + report.pool.acquired_cold
}

for (const driver of availableDrivers()) {
  describe(`input names that clash as a file and a folder (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => { server = await startServer(suite, { driver }) })

    for (const [first, second] of [['a', 'a/b'], ['data/x/y.csv', 'data/x'], ['d/e', 'd/e/f/g']]) {
      it(`"${first}" and "${second}" answer 400 invalid_file_name without taking a worker`, async () => {
        const one = await uploadFile(server, 'one.txt', 'one', 'clash-user')
        const two = await uploadFile(server, 'two.txt', 'two', 'clash-user')
        const before = await acquisitions(server)
        const { status, body } = await exec(server, {
          lang: 'py',
          code: 'print(1)',
          user_id: 'clash-user',
          files: [
            { id: one.fileId, storage_session_id: one.sessionId, name: first },
            { id: two.fileId, storage_session_id: two.sessionId, name: second },
          ],
        })
        assert.equal(status, 400, JSON.stringify(body))
        assert.equal(body.error, 'invalid_file_name')
        assert.ok(body.message.includes(first as string) && body.message.includes(second as string), body.message)
        assert.equal(await acquisitions(server), before, 'a worker was taken for a request refused by its names')
      })
    }

    it('the same name twice is still allowed (the later one wins), and a folder shared by two files is fine', async () => {
      const one = await uploadFile(server, 'one.txt', 'first', 'clash-user')
      const two = await uploadFile(server, 'two.txt', 'second', 'clash-user')
      const three = await uploadFile(server, 'three.txt', 'third', 'clash-user')
      const { status, body } = await exec(server, {
        lang: 'bash',
        code: 'cat dir/same; echo; cat dir/other',
        user_id: 'clash-user',
        files: [
          { id: one.fileId, storage_session_id: one.sessionId, name: 'dir/same' },
          { id: two.fileId, storage_session_id: two.sessionId, name: 'dir/same' },
          { id: three.fileId, storage_session_id: three.sessionId, name: 'dir/other' },
        ],
      })
      assert.equal(status, 200, JSON.stringify(body))
      assert.equal(body.stdout, 'second\nthird')
    })
  })
}

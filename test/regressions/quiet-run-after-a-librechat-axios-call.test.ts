import assert from 'node:assert/strict'
import axios from 'axios'
import { before, describe } from 'node:test'
import { USER_ID, codeTool, downloadAsLibreChat, invoke, probeAsLibreChat, uploadAsLibreChat, type CodeEnvRef } from '../helpers/librechat.ts'
import { availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * Found by `npm run test:host` (a C++ compile that took over 5 s under emulation). LibreChat's server
 * calls the file routes through axios with a timeout; axios's redirect layer (follow-redirects) leaves
 * `socket.destroy` on the socket's 'timeout' event, and on Node 19+ that socket stays in the shared
 * keep-alive agent with a 5 s idle timeout. The agents SDK's next execution took it, and a run that
 * printed nothing for 5 s was cut by the client: "Code execution is temporarily unavailable". Warden
 * now closes the connection after answering such a call (src/api/connection.ts).
 * Each case is one LibreChat call, then through the real execute_code a run that is quiet for 6 s.
 */

const QUIET_RUN = 'import time\ntime.sleep(6)\nprint("still here")'

describe('a run quiet for longer than the client agent\'s 5 s idle timeout, right after a LibreChat axios call', () => {
  let server: RunningServer
  let ref: CodeEnvRef
  const suite = suiteContext()
  before(async () => {
    server = await startServer(suite, { driver: availableDrivers()[0] ?? 'bwrap' })
    ref = await uploadAsLibreChat(server, { kind: 'user', id: USER_ID, filename: 'notes.txt', bytes: 'hello\n', contentType: 'text/plain', userId: USER_ID })
  })

  const quietRunAfter = async (call: () => Promise<void>) => {
    await call()
    const result = await invoke(codeTool(server), { lang: 'py', code: QUIET_RUN })
    assert.equal(result.content, 'stdout:\nstill here')
  }

  it('after an upload', async () => {
    await quietRunAfter(async () => {
      await uploadAsLibreChat(server, { kind: 'user', id: USER_ID, filename: 'more.txt', bytes: 'more\n', contentType: 'text/plain', userId: USER_ID })
    })
  })

  it('after a freshness probe', async () => {
    await quietRunAfter(async () => { assert.equal((await probeAsLibreChat(server, ref)).status, 200) })
  })

  it('after a download', async () => {
    await quietRunAfter(async () => { assert.equal((await downloadAsLibreChat(server, ref.storage_session_id, ref.file_id)).status, 200) })
  })

  it('after an execution LibreChat\'s server sends itself through axios (a prewarm)', async () => {
    await quietRunAfter(async () => {
      const response = await axios.post(`${server.apiUrl}/exec`, { lang: 'bash', code: 'true' }, {
        headers: { 'X-API-Key': server.apiKey, 'User-Agent': 'LibreChat/1.0' },
        timeout: 5000,
        proxy: false,
      })
      assert.equal(response.status, 200)
    })
  })
})

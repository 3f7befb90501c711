import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { before, describe } from 'node:test'
import { availableDrivers, exec, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * Deployment issue, F3. Docker's --cap-drop ALL leaves root without CAP_SYS_ADMIN, and root then may not
 * write the id maps of bubblewrap's user namespace (it belongs to the zygote's uid): EPERM, no jail. The
 * maps are now written by the namespace's owner keeping CAP_SETUID and CAP_SETGID. Here the server runs
 * as root with CAP_SYS_ADMIN removed from its bounding set, as in that container.
 */

if (availableDrivers().includes('bwrap')) {
  describe('bubblewrap under a root without CAP_SYS_ADMIN', () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startServer(suite, { driver: 'bwrap', launcher: ['setpriv', '--bounding-set=-sys_admin', '--inh-caps=-all', '--'] })
    })

    it('starts its jail, passes the self-test and runs code as another uid', async () => {
      const { status, body } = await exec(server, { lang: 'py', code: 'import os; print(os.getuid())' })
      assert.equal(status, 200, JSON.stringify(body))
      assert.equal(body.stdout, '65534\n')
      const capBnd = /^CapBnd:\s+([0-9a-f]+)$/m.exec(readFileSync(`/proc/${server.process.pid}/status`, 'utf8'))?.[1]
      const CAP_SYS_ADMIN = 21n
      assert.equal((BigInt(`0x${capBnd}`) >> CAP_SYS_ADMIN) & 1n, 0n, 'the server really ran without CAP_SYS_ADMIN')
    })
  })
}

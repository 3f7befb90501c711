import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { api, availableDrivers, exec, it, suiteContext, type RunningServer } from '../helpers/server.ts'
import { startAttackServer, type Json } from '../attacks/helpers.ts'

/**
 * Issue 9, findings 1 and 2. A run that called shutdown() on one of its own sockets used to act on a
 * socket the worker shared with the zygote and with every later worker of its slot: SHUT_WR on stdout
 * made the zygote's own write fail with EPIPE and the zygote exit (every concurrent run got 503), and
 * SHUT_RD on the control socket left slots stuck, so later runs failed and once even returned another
 * user's stdout. Whatever a run does to its own descriptors may only end its own run.
 */

const SHUTDOWN_STDOUT = 'import os, socket\nsocket.socket(fileno=os.dup(1)).shutdown(socket.SHUT_WR)\n'
const SHUTDOWN_STDERR = 'import os, socket\nsocket.socket(fileno=os.dup(2)).shutdown(socket.SHUT_WR)\n'
const SHUTDOWN_CONTROL = 'import os, socket\nfor fd in range(3, 64):\n    try:\n        socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_RDWR)\n    except OSError:\n        pass\n'

async function health (server: RunningServer): Promise<Json> {
  return await (await api(server, '/health')).json() as Json
}

/** Eight users each print their own token while `attack` runs beside them; each must get exactly its own. */
async function victimsBeside (server: RunningServer, attack: string, round: number): Promise<void> {
  const victims = Array.from({ length: 8 }, (_, index) => `victim-${round}-${index}-${Math.random().toString(36).slice(2)}`)
  const [attacker, ...answers] = await Promise.all([
    exec(server, { lang: 'py', code: attack, user_id: 'attacker' }),
    ...victims.map((token, index) => exec(server, { lang: 'py', code: `print(${JSON.stringify(token)})`, user_id: `victim-${index}` })),
  ])
  assert.equal(attacker?.status, 200, `the attacking run itself answered ${attacker?.status}: ${JSON.stringify(attacker?.body)}`)
  answers.forEach((answer, index) => {
    assert.equal(answer.status, 200, `victim ${index} answered ${answer.status}: ${JSON.stringify(answer.body)}`)
    assert.equal(answer.body.stdout, `${victims[index]}\n`, `victim ${index} got another run's output: ${JSON.stringify(answer.body)}`)
    assert.equal(answer.body.status, 'ok')
  })
}

for (const driver of availableDrivers()) {
  describe(`a run that shuts down its own sockets ends only its own run (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startAttackServer(suite, driver, { POOL_MIN: '4', POOL_MAX: '12', MAX_CONCURRENT_PER_USER: '0' })
    })

    for (const [name, attack] of [['stdout (SHUT_WR)', SHUTDOWN_STDOUT], ['stderr (SHUT_WR)', SHUTDOWN_STDERR], ['every inherited socket (SHUT_RDWR)', SHUTDOWN_CONTROL]]) {
      it(`shutdown of ${name}: 3 rounds beside 8 other users' runs, each gets its own stdout and no jail restarts`, async () => {
        const before = await health(server)
        for (let round = 0; round < 3; round++) await victimsBeside(server, attack as string, round)
        // 12 more runs after the attacks: slots of the attackers are whole again
        for (let index = 0; index < 12; index++) {
          const { status, body } = await exec(server, { lang: 'py', code: `print(${index})` })
          assert.equal(status, 200, `run ${index} after the attacks answered ${status}: ${JSON.stringify(body)}`)
          assert.equal(body.stdout, `${index}\n`)
        }
        const after = await health(server)
        assert.equal(after.pool.jails_started, before.pool.jails_started, 'a jail was restarted: a zygote exited')
        assert.equal(after.pool.zygotes_alive, after.pool.zygotes)
        assert.equal(after.status, 'ok')
      })
    }
  })
}

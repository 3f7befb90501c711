import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { availableDrivers, exec, suiteContext, type RunningServer } from '../helpers/server.ts'
import { startAttackServer } from './helpers.ts'
import { assertSettled, health } from './settled.ts'

/**
 * Issue 9's chaos test: for ROUNDS rounds, one attacker run does random damage to everything it
 * inherited (its sockets, the protocol, its parent, its own exit) while eight other users run beside it.
 * Every other user must get exactly its own stdout with a 200, no zygote may exit, and afterwards every
 * slot is free and /health's counts match the processes the host sees. Seeded, so a failure replays.
 */

const ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 200)
const VICTIMS = 8
const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 100_000)

/** Each attack is a few lines of Python or Bash; `r` is a random number the attack may use. */
const PYTHON_ATTACKS: Array<(r: number) => string> = [
  (r) => `import os, socket\nfor fd in range(0, 10):\n    try:\n        socket.socket(fileno=os.dup(fd)).shutdown(${r % 3})\n    except OSError:\n        pass\nprint("after shutdown")`,
  () => 'import os\nos.closerange(0, 1024)\nprint("nobody reads this")',
  () => 'import os\nnull = os.open("/dev/null", os.O_RDWR)\nfor fd in (1, 2, 3, 4, 5):\n    os.dup2(null, fd)\nprint("into the void")',
  () => 'import os\nos.dup2(3, 1)\nos.dup2(3, 2)\nprint("stdout into the control socket")\nraise SystemExit(3)',
  () => 'import os\nos.dup2(1, 3)\nprint("control into stdout")',
  (r) => `import os\nos.write(3, os.urandom(${1 + (r % 5000)}))\nprint("garbage sent")`,
  () => 'import os\nos.write(3, b"X" + b"\\xff\\xff\\xff\\xff")\nprint("oversized header")',
  () => 'import os, struct\nchunk = struct.pack(">BI", 0x2b, 1 << 20) + b"+" * (1 << 20)\nfor _ in range(9):\n    os.write(3, chunk)\nprint("message over budget")',
  () => 'import json, os, struct\nbody = json.dumps({"exit_code": 0, "signal": None, "marker": "00" * 16}).encode()\nos.write(3, struct.pack(">BI", 0x58, len(body)) + body)\nos.write(1, bytes(16) + b"victim-forged\\n")\nprint("after a forged done")',
  (r) => `import os\nfor fd in (1, 2, 4, 5):\n    try:\n        os.write(fd, os.urandom(16) + b"victim-${r}\\n" + os.urandom(16))\n    except OSError:\n        pass`,
  () => 'import os, signal\nfor target in (os.getppid(), 1, -1, 0):\n    try:\n        os.kill(target, signal.SIGKILL)\n    except OSError:\n        pass\nprint("still here")',
  () => 'import os\nfor pid in range(1, 64):\n    try:\n        os.kill(pid, 9)\n    except OSError:\n        pass',
  (r) => `import os, sys\nsys.stdout.write("partial" * ${r % 2000})\nsys.stdout.flush()\nos._exit(${r % 256})`,
  (r) => `import os\nos.write(1, b"x" * ${(1 << 20) + (r % 100_000)})`,
  (r) => `import threading, os, time\ndef spam():\n    while True:\n        os.write(4, b"thread ${r}\\n")\nthreading.Thread(target=spam, daemon=True).start()\ntime.sleep(0.0${r % 9})\nos._exit(0)`,
]
const BASH_ATTACKS: Array<(r: number) => string> = [
  () => 'exec 1>&- 2>&- 3>&- 4>&- 5>&-\necho gone',
  (r) => `head -c ${1 + (r % 4000)} /dev/urandom >&3; echo garbage`,
  () => 'kill -9 -1; echo survived',
  () => 'kill -9 $$',
  (r) => `printf 'victim-${r}\\n' >&4; exit ${r % 256}`,
]

function random (seed: number): () => number {
  let state = seed
  return () => {
    state = (state * 1103515245 + 12345) % 2 ** 31
    return state
  }
}

for (const driver of availableDrivers()) {
  describe(`chaos: attackers beside ${VICTIMS} other users for ${ROUNDS} rounds (${driver}, seed ${SEED})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => {
      server = await startAttackServer(suite, driver, { POOL_MIN: '6', POOL_MAX: '12', MAX_CONCURRENT_PER_USER: '0', EXEC_TIMEOUT_MS: '3000', MAX_QUEUE: '64' })
    })

    test('every other user gets exactly its own stdout, no zygote exits, and the pool is whole afterwards', { timeout: 15 * 60_000 }, async () => {
      const next = random(SEED + (driver === 'nsjail' ? 1 : 0))
      const before = await health(server)
      const attackerStatuses = new Map<number, number>()
      for (let round = 0; round < ROUNDS; round++) {
        const bash = next() % 4 === 0
        const catalogue = bash ? BASH_ATTACKS : PYTHON_ATTACKS
        const attacks = Array.from({ length: 1 + (next() % 2) }, () => catalogue[next() % catalogue.length]!(next()))
        const tokens = Array.from({ length: VICTIMS }, (_, index) => `victim-${round}-${index}-${next().toString(36)}`)
        const [attacker, ...victims] = await Promise.all([
          exec(server, { lang: bash ? 'bash' : 'py', code: attacks.join('\n'), user_id: 'attacker' }),
          ...tokens.map((token, index) => exec(server, { lang: 'py', code: `print(${JSON.stringify(token)})`, user_id: `user-${index}` })),
        ])
        attackerStatuses.set(attacker!.status, (attackerStatuses.get(attacker!.status) ?? 0) + 1)
        victims.forEach((victim, index) => {
          const where = `round ${round} (seed ${SEED}), user ${index}, beside: ${attacks.join(' | ').slice(0, 300)}`
          assert.equal(victim.status, 200, `${where}: answered ${victim.status} ${JSON.stringify(victim.body).slice(0, 300)}`)
          assert.equal(victim.body.stdout, `${tokens[index]}\n`, `${where}: got ${JSON.stringify(victim.body).slice(0, 300)}`)
          assert.equal(victim.body.status, 'ok', where)
          assert.equal(victim.body.stderr, '', where)
        })
      }
      assert.deepEqual([...attackerStatuses.keys()].filter((status) => status >= 500), [], `attackers got ${JSON.stringify([...attackerStatuses])}`)

      await assertSettled(server, before)
      const { status, body } = await exec(server, { lang: 'py', code: 'print(6 * 7)' })
      assert.equal(status, 200)
      assert.equal(body.stdout, '42\n')
    })
  })
}

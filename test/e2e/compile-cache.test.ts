import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { api, availableDrivers, exec, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'

/**
 * The compile cache on real jails: a build is kept per owner and a hit runs the kept binary without a
 * compile; what the program does when it runs (or another owner's identical source) never changes what
 * is kept or what another owner runs; a frame forging an artifact is a protocol violation.
 */

const HELLO = '#include <stdio.h>\nint main(void) { puts("hello, world"); return 0; }\n'
/** prints, then replaces its own binary with a script: the next run must still be the compiled program */
const REWRITES_ITSELF = `#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void) {
  puts("compiled");
  fflush(stdout);
  unlink("/tmp/.warden/main");
  FILE *f = fopen("/tmp/.warden/main", "w");
  if (f == NULL) return 3;
  fputs("#!/bin/sh\\necho poisoned\\n", f);
  fclose(f);
  chmod("/tmp/.warden/main", 0755);
  return 0;
}
`

/** The compile cache's answer for one execution, from the server's `request completed` line naming it. */
async function cacheAnswer (server: RunningServer, executionId: string): Promise<string | null> {
  for (let attempt = 0; attempt < 50; attempt++) {
    for (const line of server.logs().split('\n')) {
      if (!line.includes(executionId) || !line.includes('"request completed"')) continue
      return (JSON.parse(line) as { compileCache?: string | null }).compileCache ?? null
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`no log line for execution ${executionId}`)
}

async function run (server: RunningServer, body: Record<string, unknown>): Promise<{ stdout: string, stderr: string, answer: string | null, status: string }> {
  const { status, body: answer } = await exec(server, body)
  assert.equal(status, 200, JSON.stringify(answer))
  return { stdout: answer.stdout, stderr: answer.stderr, status: answer.status, answer: await cacheAnswer(server, answer.session_id) }
}

async function lookups (server: RunningServer): Promise<{ hit: number, miss: number }> {
  const text = await (await api(server, '/metrics')).text()
  const read = (result: string) => Number(new RegExp(`^warden_compile_cache_lookups_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? Number.NaN)
  return { hit: read('hit'), miss: read('miss') }
}

for (const driver of availableDrivers()) {
  describe(`compile cache on ${driver}`, () => {
    const t = suiteContext()
    const started = startServer(t, { driver, env: { POOL_MIN: '2', POOL_MAX: '2', PREPARED_MAX: '0' } })

    test('the same C source of the same user compiles once; the second run is a hit with the same output', async () => {
      const server = await started
      const before = await lookups(server)
      const first = await run(server, { lang: 'c', code: HELLO, user_id: 'alice' })
      const second = await run(server, { lang: 'c', code: HELLO, user_id: 'alice' })
      assert.deepEqual([first.answer, second.answer], ['miss', 'hit'])
      assert.equal(first.stdout, 'hello, world\n')
      assert.equal(second.stdout, 'hello, world\n')
      const after = await lookups(server)
      assert.deepEqual({ hit: after.hit - before.hit, miss: after.miss - before.miss }, { hit: 1, miss: 1 })
    })

    test('another user with the same source gets a build of their own, never the first user\'s', async () => {
      const server = await started
      const code = HELLO.replace('hello, world', 'scoped')
      assert.equal((await run(server, { lang: 'c', code, user_id: 'alice' })).answer, 'miss')
      const bob = await run(server, { lang: 'c', code, user_id: 'bob' })
      assert.equal(bob.answer, 'miss')
      assert.equal(bob.stdout, 'scoped\n')
      assert.equal((await run(server, { lang: 'c', code, user_id: 'bob' })).answer, 'hit')
    })

    test('a program that replaces its own binary while it runs does not change what the next run gets', async () => {
      const server = await started
      const first = await run(server, { lang: 'c', code: REWRITES_ITSELF, user_id: 'mallory' })
      assert.equal(first.answer, 'miss')
      assert.equal(first.stdout, 'compiled\n', first.stderr)
      for (let i = 0; i < 2; i++) {
        const again = await run(server, { lang: 'c', code: REWRITES_ITSELF, user_id: 'mallory' })
        assert.equal(again.answer, 'hit')
        assert.equal(again.stdout, 'compiled\n', again.stderr)
      }
    })

    test('a compile error is not kept: the next run compiles (and fails) again', async () => {
      const server = await started
      const broken = 'int main(void) { return nope; }\n'
      const first = await run(server, { lang: 'c', code: broken, user_id: 'alice' })
      const second = await run(server, { lang: 'c', code: broken, user_id: 'alice' })
      assert.deepEqual([first.status, second.status], ['compile_error', 'compile_error'])
      assert.deepEqual([first.answer, second.answer], ['miss', 'miss'])
    })

    test('with files in /mnt/data, or code that reads the time, the build is not cached', async () => {
      const server = await started
      const { sessionId, fileId } = await uploadFile(server, 'header.h', '#define GREETING "from the input"\n', 'alice')
      const code = '#include <stdio.h>\n#include "/mnt/data/header.h"\nint main(void) { puts(GREETING); return 0; }\n'
      const files = [{ id: fileId, session_id: sessionId, name: 'header.h' }]
      const withInput = await run(server, { lang: 'c', code, files, user_id: 'alice' })
      assert.equal(withInput.stdout, 'from the input\n', withInput.stderr)
      assert.equal(withInput.answer, null)
      // any file in /mnt/data could be read by the build, whatever the source looks like
      const plain = await run(server, { lang: 'c', code: HELLO.replace('hello, world', 'with a file'), files, user_id: 'alice' })
      assert.equal(plain.stdout, 'with a file\n')
      assert.equal(plain.answer, null)
      const dated = await run(server, { lang: 'c', code: '#include <stdio.h>\nint main(void) { puts(__TIME__); return 0; }\n', user_id: 'alice' })
      assert.equal(dated.status, 'ok')
      assert.equal(dated.answer, null)
    })

    test('Go and Rust builds are kept too', async () => {
      const server = await started
      const programs = [
        { lang: 'go', code: 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("go cached") }\n', stdout: 'go cached\n' },
        { lang: 'rs', code: 'fn main() { println!("rust cached"); }\n', stdout: 'rust cached\n' },
      ]
      for (const program of programs) {
        const first = await run(server, { lang: program.lang, code: program.code, user_id: 'alice' })
        const second = await run(server, { lang: program.lang, code: program.code, user_id: 'alice' })
        assert.deepEqual([first.answer, second.answer, first.stdout, second.stdout], ['miss', 'hit', program.stdout, program.stdout], second.stderr)
      }
    })

    test('an artifact frame the job did not ask for stops the run as a protocol violation', async () => {
      const server = await started
      // Python runs in the worker's own process, so its code can write frames on the control socket (fd 3)
      const forged = [
        'import json, os, struct',
        'body = json.dumps({"files": [{"name": "main", "size": 4}]}).encode()',
        'os.write(3, struct.pack(">BI", 0x41, len(body)) + body + struct.pack(">BI", 0x44, 4) + b"evil")',
        'import time; time.sleep(1)',
        'print("not reached")',
      ].join('\n')
      const { status, body } = await exec(server, { lang: 'py', code: forged, user_id: 'mallory' })
      assert.equal(status, 200)
      assert.equal(body.status, 'killed', JSON.stringify(body))
      assert.doesNotMatch(body.stdout, /not reached/)
    })
  })
}

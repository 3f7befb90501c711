import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { availableDrivers, exec, it, suiteContext, type RunningServer } from '../helpers/server.ts'
import { code, startAttackServer, type Json } from './helpers.ts'

/**
 * What a compile or a runtime could take from outside its own run: the host's JVM, R, Go and Cargo
 * settings in the server's environment, the per-owner compile cache's products (SECURITY.md "The compile
 * cache") after a run rewrote its own binary, and what a run left in HOME, the XDG dirs or /tmp for
 * another owner. Each answers 200, and nothing of the host or of another run reaches the program.
 * (test/attacks/compilers.test.ts has the compile-time attacks: includes, bombs, caches in the toolchains.)
 */

const HOST_CANARY = 'warden-host-canary-7f3a'
const HOST_RUNTIME_ENV: Record<string, string> = {
  JAVA_TOOL_OPTIONS: `-Dwarden.canary=${HOST_CANARY}`,
  _JAVA_OPTIONS: `-Dwarden.canary2=${HOST_CANARY}`,
  R_PROFILE_USER: `/nonexistent/${HOST_CANARY}.Rprofile`,
  R_ENVIRON_USER: `/nonexistent/${HOST_CANARY}.Renviron`,
  R_LIBS_USER: `/nonexistent/${HOST_CANARY}`,
  GOCACHE: `/nonexistent/${HOST_CANARY}`,
  CARGO_HOME: `/nonexistent/${HOST_CANARY}`,
}

async function compileRun (server: RunningServer, lang: string, source: string, user: string): Promise<Json> {
  const { status, body } = await exec(server, { lang, code: source, user_id: user })
  assert.equal(status, 200, JSON.stringify(body).slice(0, 2000))
  assert.equal(typeof body.stderr, 'string')
  return body
}

for (const driver of availableDrivers()) {
  describe(`host settings and the compile cache under attack (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    // the host's own JVM and R configuration, set where those runtimes look for it: none may reach a jail
    // Java's first compile takes seconds on a busy machine: the attack limits' 4 s would time it out
    before(async () => { server = await startAttackServer(suite, driver, { ...HOST_RUNTIME_ENV, EXEC_TIMEOUT_MS: '15000' }) })

    it('JVM and R: the host\'s JAVA_TOOL_OPTIONS, _JAVA_OPTIONS, R_PROFILE_USER, R_ENVIRON_USER, R_LIBS_USER, GOCACHE, CARGO_HOME never reach the program', async () => {
      const java = await compileRun(server, 'java', code(`
        public class Main {
          public static void main(String[] args) {
            System.out.println("java ran " + System.getProperty("java.version"));
            System.out.println(System.getProperty("warden.canary") + " " + System.getProperty("warden.canary2"));
            System.out.println(System.getenv());
          }
        }
      `), 'jvm-a')
      assert.match(java.stdout, /^java ran \d/m, `control: the JVM ran: ${java.stderr as string}`)
      assert.ok(!`${java.stdout as string}${java.stderr as string}`.includes(HOST_CANARY), `the host's JVM options reached the jail: ${java.stdout as string}${java.stderr as string}`)
      const r = await compileRun(server, 'r', 'cat("r ran", R.version.string, "\\n")\nprint(Sys.getenv())\nprint(.libPaths())\n', 'r-a')
      assert.match(r.stdout, /^r ran R version/m, `control: R ran: ${r.stderr as string}`)
      assert.ok(!`${r.stdout as string}${r.stderr as string}`.includes(HOST_CANARY), `the host's R settings reached the jail: ${r.stdout as string}`)
    })

    it('compile cache: a run that replaces its own binary does not change what the next run of that source gets; another owner shares nothing written in HOME, XDG dirs or /tmp', async () => {
      const poison = code(`
        #include <stdio.h>
        #include <stdlib.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
          puts("original");
          const char *places[] = { getenv("HOME"), getenv("XDG_CACHE_HOME"), getenv("GOCACHE"), getenv("TMPDIR"), "/tmp" };
          char path[4096];
          // all looked at before any is written: HOME and TMPDIR may be /tmp itself
          for (int i = 0; i < 5; i++) if (places[i] != NULL) {
            snprintf(path, sizeof path, "%s/warden-marker", places[i]);
            FILE *seen = fopen(path, "r"); if (seen != NULL) { printf("marker found in %s\\n", places[i]); fclose(seen); }
          }
          for (int i = 0; i < 5; i++) if (places[i] != NULL) {
            snprintf(path, sizeof path, "%s/warden-marker", places[i]);
            FILE *f = fopen(path, "w"); if (f != NULL) { fputs("x", f); fclose(f); puts("marker written"); }
          }
          unlink(argv[0]);
          FILE *f = fopen(argv[0], "w");
          if (f != NULL) { fputs("#!/bin/sh\\necho poisoned\\n", f); fclose(f); chmod(argv[0], 0755); puts("replaced"); }
          return 0;
        }
      `).replace('#include <unistd.h>', '#include <unistd.h>\n#include <sys/stat.h>')
      const first = await compileRun(server, 'c', poison, 'cache-a')
      assert.match(first.stdout, /^original$/m, first.stderr)
      assert.match(first.stdout, /^marker written$/m, 'control: the run could leave a marker')
      assert.doesNotMatch(first.stdout, /marker found/, 'control: no marker before the first run')
      assert.match(first.stdout, /^replaced$/m, `control: the run could replace its binary in the jail: ${first.stdout as string}${first.stderr as string}`)
      const again = await compileRun(server, 'c', poison, 'cache-a')
      assert.match(again.stdout, /^original$/m, `the cached build was changed by the run: ${again.stdout as string}`)
      assert.doesNotMatch(again.stdout, /poisoned/)
      const other = await compileRun(server, 'c', poison, 'cache-b')
      assert.match(other.stdout, /^original$/m)
      assert.doesNotMatch(other.stdout, /poisoned|marker found/, `another owner saw the first owner's files: ${other.stdout as string}`)
    })
  })
}

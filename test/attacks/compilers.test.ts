import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { availableDrivers, exec, it, suiteContext, type RunningServer } from '../helpers/server.ts'
import { code, startAttackServer, type Json } from './helpers.ts'

/**
 * The compilers and runtimes under attack, through POST /exec: includes of devices and host files,
 * compile-time bombs (C++ templates, D's CTFE, Rust macros), build caches and home folders that might
 * persist between owners, a compile that fills the jail's tmpfs, JVM and R reading host configuration.
 * Every answer is the normal 200 with the error on stderr (or a clear limit), the server keeps serving,
 * and each probe has a control that shows it could see what it looks for.
 */

/** Where a build keeps caches or settings (bash words; the XDG one as Go and cargo default it). */
const CACHE_DIRS = '/tmp/.cache/go-build "$HOME" "$' + '{XDG_CACHE_HOME:-/tmp/.cache}" "$HOME/.cargo" "$HOME/.m2" /tmp/.warden'

async function run (server: RunningServer, lang: string, source: string, user = 'compiler-attacker'): Promise<Json> {
  const { status, body } = await exec(server, { lang, code: source, user_id: user })
  assert.equal(status, 200, `POST /exec (${lang}) answered ${status}: ${JSON.stringify(body).slice(0, 2000)}`)
  assert.equal(typeof body.stderr, 'string')
  return body
}

/** A normal run after an attack: the server still serves, and correctly. */
async function stillServes (server: RunningServer): Promise<void> {
  assert.equal((await run(server, 'c', '#include <stdio.h>\nint main(void){puts("fine");return 0;}')).stdout, 'fine\n')
}

for (const driver of availableDrivers()) {
  describe(`compilers under attack (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    // the JVM alone needs more than the attack suites' 4 s on this shared machine; the bombs end at it
    before(async () => { server = await startAttackServer(suite, driver, { EXEC_TIMEOUT_MS: '15000' }) })

    it('#include of /dev/zero and /dev/urandom ends within the limits, as a 200', async () => {
      for (const device of ['/dev/zero', '/dev/urandom']) {
        const body = await run(server, 'c', `#include "${device}"\nint main(void){return 0;}\n`)
        assert.ok(body.stdout === '', `${device}: ${JSON.stringify(body).slice(0, 500)}`)
        assert.ok(body.stderr.length > 0, `${device}: the compile failed or was stopped with a reason on stderr`)
      }
      await stillServes(server)
    })

    it('#include of host files: the server\'s own files and /etc/shadow are absent; the compiler\'s environ has no key', async () => {
      const control = await run(server, 'c', '#include "/usr/include/stdio.h"\nint main(void){puts("included");return 0;}\n')
      assert.equal(control.stdout, 'included\n', 'control: an absolute include of a file the jail holds works')
      for (const file of ['/etc/shadow', `${process.cwd()}/package.json`, `${process.cwd()}/src/config.ts`]) {
        const body = await run(server, 'c', `#include "${file}"\nint main(void){return 0;}\n`)
        assert.match(body.stderr, /No such file or directory/, `${file}: ${body.stderr.slice(0, 500)}`)
        assert.doesNotMatch(body.stderr, /"name": "warden"|CODE_API_KEY/)
      }
      // control: what an included file holds shows in the compiler's errors (the jail's synthetic passwd);
      // gcc reads a /proc file as empty (its size is 0), so the environ probes below see at most that
      const passwd = await run(server, 'c', '#include "/etc/passwd"\nint main(void){return 0;}\n')
      assert.match(passwd.stderr, /nobody|root/, `control: ${passwd.stderr.slice(0, 500)}`)
      const environ = await run(server, 'c', '#include "/proc/self/environ"\nint main(void){return 0;}\n')
      assert.ok(!environ.stderr.includes(server.apiKey), 'the API key reached the compiler')
      const parent = await run(server, 'cpp', '#include "/proc/1/environ"\nint main(){return 0;}\n')
      assert.ok(!parent.stderr.includes(server.apiKey), 'the API key reached pid 1 of the jail')
    })

    it('compile-time bombs (C++ templates and constexpr, D\'s CTFE, Rust macro recursion) stop at the compiler\'s limit or the jail\'s', async () => {
      const bombs: Array<[string, string]> = [
        ['cpp', code(`
          template <int N> struct B { static const long v = B<N - 1>::v + B<N - 2>::v; };
          template <> struct B<0> { static const long v = 0; };
          template <> struct B<1> { static const long v = 1; };
          template <int N> struct Deep { static const int v = Deep<N + 1>::v; };
          int main() { return B<100000>::v + Deep<0>::v; }
        `)],
        ['cpp', 'constexpr long f(long n) { long s = 0; for (long i = 0; i < n; ++i) s += i; return s; }\nconstexpr long x = f(1L << 40);\nint main() { return x; }\n'],
        ['d', 'int f() { int i = 0; while (true) { ++i; } return i; }\nenum x = f();\nvoid main() {}\n'],
        ['rs', 'macro_rules! m { ($($t:tt)*) => { m!($($t)* $($t)*); } }\nfn main() { m!(x); }\n'],
      ]
      for (const [lang, source] of bombs) {
        const body = await run(server, lang, source)
        assert.equal(body.stdout, '', `${lang}: ${JSON.stringify(body).slice(0, 300)}`)
        assert.ok(body.stderr.length > 0, `${lang}: stopped with a reason on stderr`)
      }
      await stillServes(server)
    })

    it('a compile that fills /tmp (a 1 GiB initialised array) ends with a 200 and the reason', async () => {
      const body = await run(server, 'c', 'char big[1L << 30] = {1};\nint main(void){return big[0] - 1;}\n')
      assert.notEqual(body.stderr, '', JSON.stringify(body).slice(0, 500))
      const control = await run(server, 'c', 'char small[1 << 20] = {1};\nint main(void){return small[0] - 1;}\n')
      assert.equal(control.stderr, '', 'control: a compile of a 1 MiB initialised array succeeds')
      await stillServes(server)
    })

    it('build caches and homes (GOCACHE, HOME, XDG dirs, ~/.cargo) keep nothing between runs or owners', async () => {
      const plant = code(`
        for d in ${CACHE_DIRS}; do
          mkdir -p "$d" 2>/dev/null && echo planted > "$d/planted-marker" 2>/dev/null && echo "planted in $d"
        done
      `)
      const planted = await run(server, 'bash', plant, 'cache-owner-a')
      assert.match(planted.stdout, /planted in \/tmp\/\.cache\/go-build/, `control: the markers were planted: ${planted.stdout}${planted.stderr}`)
      const go = await run(server, 'go', 'package main\nimport "fmt"\nfunc main() { fmt.Println("go ok") }\n', 'cache-owner-a')
      assert.equal(go.stdout, 'go ok\n')
      for (const user of ['cache-owner-a', 'cache-owner-b']) {
        const seen = await run(server, 'bash', `for d in ${CACHE_DIRS}; do cat "$d/planted-marker" 2>/dev/null; done; echo checked`, user)
        assert.equal(seen.stdout, 'checked\n', `${user}: a marker persisted: ${seen.stdout}`)
      }
    })

    it('the JVM and R read no host configuration and no server environment', async () => {
      const java = await run(server, 'java', code(`
        public class Main {
          public static void main(String[] a) throws Exception {
            System.out.println("home=" + System.getProperty("user.home") + " shadow=" + new java.io.File("/etc/shadow").exists());
            System.out.println("env=" + System.getenv().toString());
          }
        }
      `))
      assert.match(java.stdout, /home=\S+ shadow=false/, `control: Java ran: ${JSON.stringify(java).slice(0, 500)}`)
      assert.ok(!java.stdout.includes(server.apiKey))
      const r = await run(server, 'r', 'cat("rprofile=", file.exists("~/.Rprofile"), " site=", Sys.getenv("R_PROFILE"), " shadow=", file.exists("/etc/shadow"), "\\n", sep="")\nprint(Sys.getenv())\n')
      assert.match(r.stdout, /rprofile=FALSE site=\S* shadow=FALSE/, `control: R ran: ${JSON.stringify(r).slice(0, 500)}`)
      assert.ok(!r.stdout.includes(server.apiKey))
    })
  })
}

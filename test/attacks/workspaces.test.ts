import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { availableDrivers, it, suiteContext, type RunningServer } from '../helpers/server.ts'
import { invoke, statefulTools } from '../helpers/librechat.ts'
import { LIMITS, code, startAttackServer } from './helpers.ts'

/**
 * Runtime sessions (LibreChat's stateful profile: /mnt/data persists between calls) under attack, through
 * the real client: names that clash with the manifest's own keys, links left behind for the next call's
 * staging or for collection, sparse and fallocated files against the quota, a file changed while it is
 * collected, two calls of one session at once, a restart. Every probe has a control that the thing it
 * looks for is seen when it is there.
 */

const ATTACKER = '6650c0ffee0123456789a77a'

/** The names and sizes in /mnt/data as one call sees them (JSON on stdout). */
const LIST = code(`
  import json, os
  seen = {}
  for name in sorted(os.listdir("/mnt/data")):
      p = os.path.join("/mnt/data", name)
      seen[name] = {"link": os.path.islink(p), "size": os.lstat(p).st_size, "text": open(p, errors="replace").read(64) if os.path.isfile(p) and not os.path.islink(p) else None}
  print("LIST" + json.dumps(seen))
`)

function listed (content: string): Record<string, { link: boolean, size: number, text: string | null }> {
  const line = content.split('\n').find((text) => text.startsWith('LIST'))
  assert.ok(line !== undefined, `no listing in: ${content.slice(0, 2000)}`)
  return JSON.parse(line.slice('LIST'.length))
}

for (const driver of availableDrivers()) {
  describe(`workspaces under attack (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => { server = await startAttackServer(suite, driver) })

    it('names that are the manifest\'s own keys or an object\'s built-ins are kept like any other name', async () => {
      const { code: tool } = statefulTools(server, ATTACKER, 'v2:user:names')
      const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'files', 'owner', 'id', 'control.txt']
      const write = `for n in ${JSON.stringify(names)}:\n    open("/mnt/data/" + n, "w").write("bytes of " + n)\nprint("written")\n`
      assert.match((await invoke(tool, { lang: 'py', code: write })).content, /written/)
      const seen = listed((await invoke(tool, { lang: 'py', code: LIST })).content)
      assert.equal(seen['control.txt']?.text, 'bytes of control.txt', 'control: a plain name persists')
      for (const name of names) assert.equal(seen[name]?.text, `bytes of ${name}`, `${name} did not persist: ${JSON.stringify(seen)}`)
      // and the session still works after a call that deletes them
      const removed = `import os\nfor n in ${JSON.stringify(names)}:\n    os.remove("/mnt/data/" + n)\nprint("removed")\n`
      assert.match((await invoke(tool, { lang: 'py', code: removed })).content, /removed/)
      assert.deepEqual(Object.keys(listed((await invoke(tool, { lang: 'py', code: LIST })).content)), [])
    })

    it('symlinks and hard links left in /mnt/data are never followed by the next call\'s staging or by collection', async () => {
      const { code: tool } = statefulTools(server, ATTACKER, 'v2:user:links')
      const plant = code(`
        import os
        open("/mnt/data/plain.txt", "w").write("plain")
        os.symlink("/etc/passwd", "/mnt/data/passwd")
        os.symlink("/proc/self/environ", "/mnt/data/environ")
        os.symlink("/proc/1/root/etc/hostname", "/mnt/data/root")
        os.symlink("../../../../etc/shadow", "/mnt/data/dotdot")
        os.symlink("plain.txt", "/mnt/data/relative")
        os.link("/mnt/data/plain.txt", "/mnt/data/hard.txt")
        print("planted", sorted(os.listdir("/mnt/data")))
      `)
      const planted = await invoke(tool, { lang: 'py', code: plant })
      assert.match(planted.content, /planted \[.*'environ'.*'passwd'.*\]/, 'control: the links existed in the call that made them')
      const seen = listed((await invoke(tool, { lang: 'py', code: LIST })).content)
      assert.equal(seen['plain.txt']?.text, 'plain', 'control: a regular file persists')
      for (const name of ['passwd', 'environ', 'root', 'dotdot', 'relative']) assert.equal(seen[name], undefined, `${name}: a link came back: ${JSON.stringify(seen)}`)
      // a hard link is two names of one regular file: at most its own bytes come back, never a link
      if (seen['hard.txt'] !== undefined) assert.deepEqual(seen['hard.txt'], { link: false, size: 5, text: 'plain' })
    })

    it('a sparse file and fallocate against the quota: the quota holds in whole blocks, the session keeps its earlier files', async () => {
      const { code: tool } = statefulTools(server, ATTACKER, 'v2:user:sparse')
      await invoke(tool, { lang: 'py', code: 'open("/mnt/data/earlier.txt", "w").write("earlier")' })
      const attack = code(`
        import os
        results = {}
        with open("/mnt/data/sparse.bin", "wb") as f:
            try:
                f.truncate(${LIMITS.maxFileMb - 1} * 2**20)
                results["sparse_apparent"] = os.fstat(f.fileno()).st_size
                results["sparse_blocks"] = os.fstat(f.fileno()).st_blocks * 512
            except OSError as e:
                results["sparse"] = e.errno
        for i in range(4):
            fd = os.open(f"/mnt/data/alloc{i}.bin", os.O_CREAT | os.O_WRONLY)
            try:
                os.posix_fallocate(fd, 0, ${LIMITS.maxFileMb - 1} * 2**20)
                results[f"alloc{i}"] = os.fstat(fd).st_blocks * 512
            except OSError as e:
                results[f"alloc{i}"] = "errno %d" % e.errno
            os.close(fd)
        st = os.statvfs("/mnt/data")
        results["used"] = (st.f_blocks - st.f_bfree) * st.f_frsize
        print("RESULTS", results)
      `)
      const result = await invoke(tool, { lang: 'py', code: attack })
      assert.match(result.content, /RESULTS/, result.content)
      const used = Number(/'used': (\d+)/.exec(result.content)?.[1])
      assert.ok(used <= LIMITS.workdirMb * 2 ** 20, `used ${used} bytes of a ${LIMITS.workdirMb} MiB quota`)
      assert.match(result.content, /errno 28|'alloc\d': 'errno 28'/, 'control: fallocate reached the quota (ENOSPC)')
      const seen = listed((await invoke(tool, { lang: 'py', code: LIST })).content)
      assert.equal(seen['earlier.txt']?.text, 'earlier', 'the earlier file is intact')
      const kept = Object.values(seen).reduce((sum, file) => sum + file.size, 0)
      assert.ok(kept <= LIMITS.workdirMb * 2 ** 20, `the next call was staged ${kept} bytes, over the quota`)
    })

    it('a file grown, truncated and replaced by a symlink while it is collected comes back whole or not at all', async () => {
      const { code: tool } = statefulTools(server, ATTACKER, 'v2:user:race')
      const attack = code(`
        import os, threading, time
        open("/mnt/data/stable.txt", "w").write("stable")
        for i in range(3):
            open(f"/mnt/data/moving{i}.bin", "wb").write(b"a" * 2**20)
        def churn():
            end = time.time() + 30
            while time.time() < end:
                for i in range(3):
                    p = f"/mnt/data/moving{i}.bin"
                    try:
                        if i == 0:
                            open(p, "ab").write(b"b" * 65536)
                        elif i == 1:
                            os.truncate(p, 10)
                            open(p, "ab").write(b"c" * 2**20)
                        else:
                            os.remove(p); os.symlink("/etc/passwd", p); os.remove(p); open(p, "wb").write(b"d" * 2**20)
                    except OSError:
                        pass
        t = threading.Thread(target=churn, daemon=True)
        t.start()
        time.sleep(0.2)
        print("churning")
      `)
      const result = await invoke(tool, { lang: 'py', code: attack })
      assert.match(result.content, /churning/)
      const seen = listed((await invoke(tool, { lang: 'py', code: LIST })).content)
      assert.equal(seen['stable.txt']?.text, 'stable', 'control: the stable file persists')
      for (const [name, file] of Object.entries(seen)) {
        assert.equal(file.link, false, `${name} came back as a link`)
        if (name.startsWith('moving')) assert.ok(file.text === null || /^[abcd]*$/.test(file.text), `${name} holds foreign bytes: ${file.text}`)
      }
    })

    it('two calls of one runtime session at once: each call\'s own file survives, the manifest stays whole', async () => {
      const { code: tool } = statefulTools(server, ATTACKER, 'v2:user:concurrent')
      await invoke(tool, { lang: 'py', code: 'open("/mnt/data/base.txt", "w").write("base")' })
      const calls = Array.from({ length: 4 }, async (_, i) => await invoke(tool, { lang: 'py', code: `import time\nopen("/mnt/data/call${i}.txt", "w").write("call ${i}")\ntime.sleep(0.3)\nprint("done ${i}")` }))
      for (const [i, result] of (await Promise.all(calls)).entries()) assert.match(result.content, new RegExp(`done ${i}`))
      const seen = listed((await invoke(tool, { lang: 'py', code: LIST })).content)
      assert.equal(seen['base.txt']?.text, 'base')
      for (let i = 0; i < 4; i++) assert.equal(seen[`call${i}.txt`]?.text, `call ${i}`, JSON.stringify(seen))
    })

    it('a restart during a call: the manifest is the last acknowledged one, nothing half-written is served', async () => {
      const { code: tool } = statefulTools(server, ATTACKER, 'v2:user:restart')
      await invoke(tool, { lang: 'py', code: 'open("/mnt/data/kept.txt", "w").write("kept")' })
      const interrupted = invoke(tool, { lang: 'py', code: 'import time\nopen("/mnt/data/half.txt", "w").write("half")\ntime.sleep(2)\nprint("finished")' }).then(() => 'answered', () => 'failed')
      await new Promise((resolve) => setTimeout(resolve, 800))
      await server.restart()
      await interrupted
      const after = statefulTools(server, ATTACKER, 'v2:user:restart')
      const seen = listed((await invoke(after.code, { lang: 'py', code: LIST })).content)
      assert.equal(seen['kept.txt']?.text, 'kept', 'control: the acknowledged file survived')
      if (seen['half.txt'] !== undefined) assert.equal(seen['half.txt'].text, 'half', 'a file of the interrupted call is whole if it is there at all')
    })
  })
}

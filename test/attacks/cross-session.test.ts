import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, availableDrivers, exec, suiteContext, type RunningServer } from '../helpers/server.ts'
import {
  LIMITS, assertStillServing, code, describeRun, download, listFiles, randomId, run, startAttackServer, upload, type Json,
} from './helpers.ts'

/**
 * One session reaching another's files, or the host's: links and special files in /mnt/data, guessed
 * ids, names built to break paths or headers, and a concurrent execution's scratch space.
 */

/** Names of every stored file, read from the metadata the store keeps next to each file (`<id>.json`). */
async function storedNames (dataDir: string): Promise<string[]> {
  const names: string[] = []
  for (const file of (await listFiles(dataDir)).filter((name) => name.endsWith('.json'))) {
    try {
      names.push(String((JSON.parse(await readFile(path.join(dataDir, file), 'utf8')) as Json).name))
    } catch {
      // not a metadata file
    }
  }
  return names
}

/** The names the store holds for one session (GET /files/:sid?detail=normalized). */
async function sessionNames (server: RunningServer, sessionId: string): Promise<string[]> {
  const response = await api(server, `/files/${sessionId}?detail=normalized`)
  assert.equal(response.status, 200)
  return (await response.json() as Json[]).map((file) => String(file.name)).sort()
}

for (const driver of availableDrivers()) {
  describe(`cross-session attacks on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer

    before(async () => {
      server = await startAttackServer(suite, driver)
    })

    describe('links and special files in /mnt/data', () => {
      test('Bash symlinks to /etc/passwd (absolute, ../../ relative), /proc/1/root/etc/hostname, DATA_DIR and / are listed nowhere; a hard link to /etc/passwd fails with EXDEV', async () => {
        const { body } = await run(server, 'bash', code(`
          cd /mnt/data
          ln -s /etc/passwd abs-passwd
          ln -s ../../etc/passwd rel-passwd
          ln -s /proc/1/root/etc/hostname proc-root
          ln -s '${server.dataDir}' data-dir
          ln -s / root-dir
          mkdir sub && ln -s ../../../etc/passwd sub/nested-link
          ln /etc/passwd hard-passwd; echo "hard link rc=$?"
          echo control > real.txt
        `))
        assert.equal(body.status, 'ok', describeRun(body))
        assert.match(body.stderr, /ln: failed to create hard link 'hard-passwd' => '\/etc\/passwd': Invalid cross-device link/)
        assert.deepEqual((body.files as Json[]).map((file) => file.name), ['real.txt'])
        assert.match(body.stderr, /6 symlink\(s\) or special file\(s\) in \/mnt\/data were not kept/, 'no note says the links were dropped')
        assert.deepEqual(await sessionNames(server, body.session_id), ['real.txt'])
        const linkNames = ['abs-passwd', 'rel-passwd', 'proc-root', 'data-dir', 'root-dir', 'nested-link', 'hard-passwd']
        assert.deepEqual((await storedNames(server.dataDir)).filter((name) => linkNames.some((link) => name.includes(link))), [])
        await assertStillServing(server)
      })

      test('a Python symlink to /etc/passwd that replaces an uploaded input is not returned, and the stored input is unchanged', async () => {
        const input = await upload(server, 'input.txt', 'original input')
        const { body } = await run(server, 'py', code(`
          import os
          os.remove("/mnt/data/input.txt")
          os.symlink("/etc/passwd", "/mnt/data/input.txt")
          os.symlink("/proc/self/root/etc/passwd", "/mnt/data/self-root")
          try:
              os.link("/etc/passwd", "/mnt/data/hard")
          except OSError as error:
              print("link", error.strerror)
        `), { files: [{ id: input.fileId, storage_session_id: input.sessionId, name: 'input.txt' }] })
        assert.equal(body.status, 'ok', describeRun(body))
        assert.equal(body.stdout, 'link Invalid cross-device link\n')
        assert.deepEqual(body.files, [])
        assert.deepEqual(body.deleted_files, ['input.txt'])
        assert.match(body.stderr, /2 symlink\(s\) or special file\(s\) in \/mnt\/data were not kept/)
        const original = await download(server, input.sessionId, input.fileId)
        assert.equal(original.status, 200)
        assert.equal(original.bytes.toString(), 'original input')
        await assertStillServing(server)
      })

      test('a FIFO and a Unix socket in /mnt/data are not returned and the run does not hang; mknod of char and block devices fails with EPERM', async () => {
        const { body, elapsedMs } = await run(server, 'py', code(`
          import os, socket, stat
          os.mkfifo("/mnt/data/fifo")
          sock = socket.socket(socket.AF_UNIX)
          sock.bind("/mnt/data/socket")
          for name, mode, device in (("null", stat.S_IFCHR, os.makedev(1, 3)), ("disk", stat.S_IFBLK, os.makedev(8, 0))):
              try:
                  os.mknod(f"/mnt/data/{name}", mode | 0o666, device)
                  print(name, "CREATED")
              except OSError as error:
                  print(name, error.strerror)
          open("/mnt/data/real.txt", "w").write("control")
        `))
        assert.equal(body.status, 'ok', describeRun(body))
        assert.equal(body.stdout, 'null Operation not permitted\ndisk Operation not permitted\n')
        assert.deepEqual((body.files as Json[]).map((file) => file.name), ['real.txt'])
        assert.match(body.stderr, /2 symlink\(s\) or special file\(s\) in \/mnt\/data were not kept/)
        assert.ok(elapsedMs < LIMITS.timeoutMs, `answered after ${Math.round(elapsedMs)} ms`)
        await assertStillServing(server)
      })

      test('from Bash, mkfifo is not returned and mknod fails with "Operation not permitted"', async () => {
        const { body, elapsedMs } = await run(server, 'bash', 'cd /mnt/data; mkfifo fifo; mknod null c 1 3; mknod disk b 8 0; echo control > real.txt')
        assert.equal(body.status, 'ok', describeRun(body))
        assert.match(body.stderr, /mknod: null: Operation not permitted\nmknod: disk: Operation not permitted/)
        assert.deepEqual((body.files as Json[]).map((file) => file.name), ['real.txt'])
        assert.ok(elapsedMs < LIMITS.timeoutMs)
        await assertStillServing(server)
      })
    })

    describe('guessed ids', () => {
      test('200 random 21-character ids on /download, /sessions/…/objects and in files[] answer 404 and /files an empty list, never 5xx', async () => {
        const real = await upload(server, 'secret.txt', 'secret')
        const statuses = new Map<string, number[]>()
        const record = (route: string, status: number) => statuses.set(route, [...(statuses.get(route) ?? []), status])
        for (let i = 0; i < 200; i++) {
          const [sessionId, fileId] = [randomId(), randomId()]
          // half the guesses keep one real half: a real session with a guessed file, a real file in a guessed session
          const [guessSession, guessFile] = i % 4 === 0 ? [real.sessionId, fileId] : i % 4 === 1 ? [sessionId, real.fileId] : [sessionId, fileId]
          const responses = await Promise.all([
            api(server, `/download/${guessSession}/${guessFile}`),
            api(server, `/sessions/${guessSession}/objects/${guessFile}`),
            api(server, `/files/${sessionId}`),
            exec(server, { lang: 'py', code: 'print(open("/mnt/data/x.txt").read())', files: [{ id: guessFile, storage_session_id: guessSession, name: 'x.txt' }] }),
          ])
          const [downloaded, probed, listed, executed] = responses
          record('download', downloaded!.status)
          record('objects', probed!.status)
          record('exec files[]', executed!.status)
          // an unknown session lists as an empty 200 (as the official server does) or 404: nothing either way
          const listing = await listed!.json() as unknown
          record('files', listed!.status === 200 && Array.isArray(listing) && listing.length === 0 ? 2000 : listed!.status)
          await Promise.all([downloaded!.arrayBuffer(), probed!.arrayBuffer()])
        }
        for (const [route, codes] of statuses) {
          assert.equal(codes.length, 200)
          const expected = route === 'files' ? [404, 2000] : [404]
          const seen = [...new Set(codes)]
          assert.ok(seen.every((code) => expected.includes(code)), `${route} answered ${seen.join(', ')} (2000 = an empty 200 list)`)
        }
        assert.equal((await download(server, real.sessionId, real.fileId)).bytes.toString(), 'secret', 'the control: the real file is there')
        await assertStillServing(server)
      })
    })

    describe('odd file names', () => {
      const returned = [
        'ünï cödé 📈.txt', 'a'.repeat(251) + '.txt', '..foo', '--help', 'with space and \'single\' "double".txt',
        'semi;colon%20.txt:*?<>|', '\u202Eevil.txt', 'dir/sub/nested.txt',
      ]
      // the worker applies the server's name rules itself, so a refused name uses no output slot
      test('names with unicode, 255 bytes, ..foo, leading dashes, spaces, quotes and %;: come back exactly and download with a safe Content-Disposition; control characters, invalid UTF-8 and backslashes are skipped with a note', async () => {
        const { body } = await run(server, 'py', code(`
          import json, os
          names = json.loads(${JSON.stringify(JSON.stringify(returned))})
          names += ["new\\nline.txt", "crlf\\r\\nX-Injected: 1.txt", "tab\\tname.txt", "back\\\\slash.txt"]
          for name in names:
              os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
              with open(name, "w") as f:
                  f.write("content of " + name)
          with open(b"bad\\xffutf8.txt", "wb") as f:
              f.write(b"x")
        `), {})
        assert.equal(body.status, 'ok', describeRun(body))
        const names = (body.files as Json[]).map((file) => file.name as string)
        assert.deepEqual([...names].sort(), [...returned].sort(), `returned: ${JSON.stringify(names)}`)
        assert.match(body.stderr, /5 file\(s\) with control characters, a backslash or invalid UTF-8 in the name were not kept/)
        assert.doesNotMatch(body.stderr, /limits are/, 'no name the server refuses took the place of a good file')
        for (const file of body.files as Json[]) {
          const got = await download(server, file.storage_session_id, file.id)
          assert.equal(got.status, 200, file.name)
          assert.equal(got.bytes.toString(), `content of ${file.name}`)
          const disposition = got.headers.get('content-disposition') ?? ''
          assert.doesNotMatch(disposition, /[\r\n\0]/)
          const match = /^attachment; filename="([\x20-\x7e]*)"; filename\*=UTF-8''([A-Za-z0-9%._~-]+)$/.exec(disposition)
          assert.ok(match, `unsafe Content-Disposition for ${JSON.stringify(file.name)}: ${disposition}`)
          assert.doesNotMatch(match[1] ?? '', /["\\]/)
          assert.equal(decodeURIComponent(match[2] ?? ''), path.posix.basename(file.name))
        }
        await assertStillServing(server)
      })

      test('from Bash, names with a newline and a CRLF header injection are skipped with a note; a leading-dash name comes back', async () => {
        const { body } = await run(server, 'bash', code(`
          cd /mnt/data
          printf x > $'new\\nline.txt'
          printf x > $'x\\r\\nSet-Cookie: injected=1'
          printf x > -n
          printf x > ' spaced '
        `))
        assert.equal(body.status, 'ok', describeRun(body))
        assert.deepEqual((body.files as Json[]).map((file) => file.name).sort(), [' spaced ', '-n'])
        assert.match(body.stderr, /2 file\(s\) with control characters, a backslash or invalid UTF-8 in the name were not kept/)
        for (const file of body.files as Json[]) {
          const got = await download(server, file.storage_session_id, file.id)
          assert.equal(got.status, 200)
          assert.equal(got.headers.get('set-cookie'), null)
        }
        await assertStillServing(server)
      })
    })

    describe('a concurrent execution', () => {
      test('cannot see another execution\'s /mnt/data, /tmp or /dev/shm while it runs', async () => {
        const secret = `secret-${Math.random().toString(36).slice(2)}`
        const holder = run(server, 'py', code(`
          import time
          for where in ("/mnt/data/secret.txt", "/tmp/secret.txt", "/dev/shm/secret.txt"):
              with open(where, "w") as f:
                  f.write("${secret}")
          print("written", time.time(), flush=True)
          time.sleep(2.5)
          print("until", time.time())
        `))
        await sleep(600)
        const seeker = run(server, 'py', code(`
          import json, os, time
          needle = bytes.fromhex("${Buffer.from(secret).toString('hex')}")
          found, scanned = [], 0
          for top in ("/mnt/data", "/tmp", "/dev/shm", "/mnt", "/run", "/opt"):
              for root, dirs, names in os.walk(top):
                  for name in names:
                      where = os.path.join(root, name)
                      scanned += 1
                      try:
                          with open(where, "rb") as f:
                              if needle in f.read(1 << 20):
                                  found.append(where)
                      except OSError:
                          pass
          print(json.dumps({"found": found, "at": time.time(), "listing": sorted(os.listdir("/mnt/data"))}))
        `))
        const [held, sought] = await Promise.all([holder, seeker])
        assert.equal(held.body.status, 'ok', describeRun(held.body))
        assert.equal(sought.body.status, 'ok', describeRun(sought.body))
        const written = Number(/^written ([\d.]+)$/m.exec(held.body.stdout)?.[1])
        const until = Number(/^until ([\d.]+)$/m.exec(held.body.stdout)?.[1])
        const result = JSON.parse(String(sought.body.stdout).trim()) as Json
        assert.ok(result.at > written && result.at < until, `the search (${result.at}) was not within the holder's run (${written}–${until})`)
        assert.deepEqual(result.found, [])
        assert.deepEqual(result.listing, [])
        await assertStillServing(server)
      })
    })
  })
}

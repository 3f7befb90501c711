import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import {
  LIMITS, assertNoFiles, assertStillServing, assertStoppedBy, code, describeRun, download, hostProcessesOfJail, jailProcesses,
  leftoverProcesses, peakWorkerPids, rssBytes, run, serverPid, settleLeftovers, startAttackServer, upload, type Json,
} from './helpers.ts'

/**
 * Resource exhaustion: every attack hits a limit (memory, pids, time, output, disk, file size), is
 * stopped or fails with the program's own error, is explained in the answer, and leaves the server
 * serving. Limits: test/attacks/helpers.ts LIMITS (4 s, 256 MiB, 64 pids, 64 MiB work dir, 32 MiB /tmp,
 * 32 MiB per file, 64 KiB per stream, 10 output files).
 */

const MiB = 1024 * 1024
/** a run stopped by the timer answers within this */
const TIMEOUT_BOUND_MS = LIMITS.timeoutMs + 2000

function assertTimedOutPromptly (body: Json, elapsedMs: number): void {
  assertStoppedBy(body, 'timeout')
  assert.ok(body.wall_time_ms <= TIMEOUT_BOUND_MS, `wall_time_ms ${body.wall_time_ms} > ${TIMEOUT_BOUND_MS}`)
  assert.ok(elapsedMs <= TIMEOUT_BOUND_MS, `answered after ${Math.round(elapsedMs)} ms > ${TIMEOUT_BOUND_MS}`)
}

/** Pages of TCP buffer memory in use on the whole host (`mem` of the TCP line of /proc/net/sockstat). */
function tcpMemoryPages (): number {
  return Number(/^TCP:.* mem (\d+)$/m.exec(readFileSync('/proc/net/sockstat', 'utf8'))?.[1] ?? 0)
}

/** What a file-size probe says of a stored file. */
async function storedSize (server: RunningServer, sessionId: string, fileId: string): Promise<number> {
  const response = await api(server, `/sessions/${sessionId}/objects/${fileId}`)
  const info = await response.json() as Json
  assert.equal(response.status, 200, JSON.stringify(info))
  return info.size as number
}

for (const driver of availableDrivers()) {
  describe(`resource attacks on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer

    before(async () => {
      server = await startAttackServer(suite, driver)
    })

    describe('memory', () => {
      test('a Python memory bomb (list of 16 MiB bytearrays) is stopped as oom with the memory-limit sentence', async () => {
        const { body } = await run(server, 'py', code(`
          chunks = []
          while True:
              chunks.append(bytearray(16 * 1024 * 1024))
        `))
        assertStoppedBy(body, 'oom')
        assertNoFiles(body)
        await assertStillServing(server)
      })

      test('a Bash memory bomb (head -c 1G /dev/zero | tail) is stopped as oom with the memory-limit sentence', async () => {
        const { body } = await run(server, 'bash', 'head -c 1G /dev/zero | tail')
        assertStoppedBy(body, 'oom')
        await assertStillServing(server)
      })

      // Python only: Bash cannot listen on a socket. The counter is the host's (tcp_memory_allocated is
      // global, not per network namespace), sampled while the run holds its buffers.
      test('kernel TCP buffers over loopback count against the memory limit: one execution cannot hold 3× MEMORY_LIMIT_MB in socket memory', async (t) => {
        const target = 3 * LIMITS.memoryMb * MiB
        const base = tcpMemoryPages()
        let peak = base
        const sampler = setInterval(() => { peak = Math.max(peak, tcpMemoryPages()) }, 20)
        let body: Json
        try {
          ({ body } = await run(server, 'py', code(`
            import socket, threading, time
            server = socket.create_server(("127.0.0.1", 40201), backlog=1024)
            accepted = []
            def accept():
                while True:
                    accepted.append(server.accept()[0])
            threading.Thread(target=accept, daemon=True).start()
            held, queued, started = [], 0, time.time()
            try:
                while queued < ${target} and time.time() - started < 2.5:
                    client = socket.create_connection(("127.0.0.1", 40201))
                    client.setblocking(False)
                    try:
                        while True:
                            queued += client.send(b"x" * 262144)
                    except BlockingIOError:
                        pass
                    held.append(client)
            except OSError as error:
                print("refused:", error)
            print("connections", len(held), "queued", queued, flush=True)
            time.sleep(0.5)
          `)))
        } finally {
          clearInterval(sampler)
        }
        const heldBytes = (peak - base) * 4096
        const queued = Number(/queued (\d+)/.exec(body.stdout)?.[1] ?? 0)
        t.diagnostic(`status ${body.status}; ${body.stdout.trim()}; host TCP memory rose by ${Math.round(heldBytes / MiB)} MiB (limit ${LIMITS.memoryMb} MiB)`)
        assert.ok(body.status === 'oom' || (heldBytes <= LIMITS.memoryMb * MiB && queued <= LIMITS.memoryMb * MiB),
          `a run limited to ${LIMITS.memoryMb} MiB held ${Math.round(heldBytes / MiB)} MiB of TCP buffers (queued ${Math.round(queued / MiB)} MiB) and ended ${body.status}`)
        await assertStillServing(server)
      })
    })

    describe('processes and threads', () => {
      test('a Python os.fork bomb gets EAGAIN (Resource temporarily unavailable) and never has more than PIDS_LIMIT processes', async (t) => {
        const { result: { body }, peak, limits } = await peakWorkerPids(server, async () => await run(server, 'py', code(`
          import os, time
          forked = 0
          try:
              while True:
                  if os.fork() == 0:
                      time.sleep(30)
                      os._exit(0)
                  forked += 1
          except OSError as error:
              print("forked", forked, repr(error))
        `)))
        assert.equal(body.status, 'ok', describeRun(body))
        const match = /^forked (\d+) BlockingIOError\(11, 'Resource temporarily unavailable'\)$/m.exec(body.stdout)
        assert.ok(match, `no EAGAIN in ${describeRun(body)}`)
        assert.ok(Number(match[1]) < LIMITS.pidsMax, `${match[1]} children forked with PIDS_LIMIT ${LIMITS.pidsMax}`)
        assert.ok(limits.length > 0 && limits.every((limit) => limit === LIMITS.pidsMax), `pids.max of the worker groups: ${limits.join(', ')}`)
        assert.ok(peak <= LIMITS.pidsMax, `peak of ${peak} processes in one worker group`)
        assert.ok(peak >= LIMITS.pidsMax / 2, `the sampler saw only ${peak} processes: the bomb did not run`)
        t.diagnostic(`forked ${match[1]} children; peak pids.current ${peak} of ${LIMITS.pidsMax}`)
        await assertStillServing(server)
      })

      test('a Bash fork bomb :(){ :|:& };: fails with "Resource temporarily unavailable" and never has more than PIDS_LIMIT processes', async (t) => {
        const { result: { body }, peak } = await peakWorkerPids(server, async () =>
          await run(server, 'bash', ':(){ :|:& };:\nsleep 2\necho bomb over'))
        assert.ok(['ok', 'error', 'killed', 'EL', 'timeout'].includes(body.status), describeRun(body))
        assert.match(body.stderr, /Resource temporarily unavailable/, describeRun(body))
        assert.ok(peak <= LIMITS.pidsMax, `peak of ${peak} processes in one worker group`)
        assert.ok(peak >= LIMITS.pidsMax / 2, `the sampler saw only ${peak} processes: the bomb did not run`)
        t.diagnostic(`status ${body.status}; peak pids.current ${peak} of ${LIMITS.pidsMax}`)
        await assertStillServing(server)
      })

      test('a Python thread bomb ends in "can\'t start new thread" below PIDS_LIMIT threads', async () => {
        const { result: { body }, peak } = await peakWorkerPids(server, async () => await run(server, 'py', code(`
          import threading, time
          started = 0
          try:
              while True:
                  threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                  started += 1
          except RuntimeError as error:
              print("threads", started, repr(error))
        `)))
        assert.equal(body.status, 'ok', describeRun(body))
        const match = /^threads (\d+) RuntimeError\("can't start new thread"\)$/m.exec(body.stdout)
        assert.ok(match, `no "can't start new thread" in ${describeRun(body)}`)
        assert.ok(Number(match[1]) < LIMITS.pidsMax)
        assert.ok(peak <= LIMITS.pidsMax, `peak of ${peak} tasks in one worker group`)
        await assertStillServing(server)
      })
    })

    describe('time', () => {
      const cases: Array<[string, 'py' | 'bash', string]> = [
        ['a Python CPU loop (while True: pass)', 'py', 'while True:\n    pass\n'],
        ['a Bash CPU loop (while :; do :; done)', 'bash', 'while :; do :; done'],
        ['a Python sleep forever (time.sleep(10**6))', 'py', 'import time\ntime.sleep(10**6)\n'],
        ['a Bash sleep forever (sleep infinity)', 'bash', 'sleep infinity'],
      ]
      for (const [what, lang, source] of cases) {
        test(`${what} is stopped as timeout within EXEC_TIMEOUT_MS + 2 s with the time-limit sentence`, async () => {
          const { body, elapsedMs } = await run(server, lang, source)
          assertTimedOutPromptly(body, elapsedMs)
          await assertStillServing(server)
        })
      }
    })

    describe('output floods', () => {
      const floods: Array<[string, 'py' | 'bash', string, 'OL' | 'EL']> = [
        ['a Python stdout flood (64 KiB writes in a loop)', 'py', 'import sys\nwhile True:\n    sys.stdout.write("x" * 65536)\n', 'OL'],
        ['a Bash stdout flood (yes)', 'bash', 'yes', 'OL'],
        ['a Python stderr flood (64 KiB writes in a loop)', 'py', 'import sys\nwhile True:\n    sys.stderr.write("x" * 65536)\n', 'EL'],
        ['a Bash stderr flood (yes >&2)', 'bash', 'yes >&2', 'EL'],
      ]
      for (const [what, lang, source, status] of floods) {
        test(`${what} is stopped as ${status}, cut at 64 KiB with truncated:true, and the server's RSS grows by less than 100 MiB`, async (t) => {
          const rssBefore = rssBytes(serverPid(server))
          const { body } = await run(server, lang, source)
          assertStoppedBy(body, status)
          const stream = status === 'OL' ? body.stdout as string : (body.stderr as string).replace(/\n?Output exceeded the limit[^\n]*\n$/, '')
          const bytes = Buffer.byteLength(stream)
          assert.ok(bytes <= LIMITS.maxStdoutBytes, `${bytes} bytes of ${status === 'OL' ? 'stdout' : 'stderr'} came back`)
          assert.ok(bytes >= LIMITS.maxStdoutBytes / 2, `only ${bytes} bytes came back: the flood did not reach the cap`)
          const growth = rssBytes(serverPid(server)) - rssBefore
          assert.ok(growth < 100 * MiB, `the server's RSS grew by ${Math.round(growth / MiB)} MiB`)
          t.diagnostic(`${bytes} bytes kept; server RSS ${Math.round(rssBefore / MiB)} MiB, grew by ${(growth / MiB).toFixed(1)} MiB`)
          await assertStillServing(server)
        })
      }
    })

    describe('disk', () => {
      test('filling /mnt/data from Python fails with ENOSPC (No space left on device) and an uploaded input stays downloadable unchanged', async () => {
        const original = 'a,b\n1,2\n'
        const input = await upload(server, 'keep.csv', original)
        const { body } = await run(server, 'py', code(`
          import os
          assert open("/mnt/data/keep.csv").read() == "a,b\\n1,2\\n"
          i = 0
          while True:
              with open(f"/mnt/data/fill{i}.bin", "wb") as f:
                  for _ in range(16):
                      f.write(b"x" * 1024 * 1024)
              i += 1
        `), { files: [{ id: input.fileId, storage_session_id: input.sessionId, name: 'keep.csv' }] })
        assert.ok(['error', 'oom', 'killed'].includes(body.status), describeRun(body))
        if (body.status === 'error') assert.match(body.stderr, /OSError: \[Errno 28\] No space left on device/, describeRun(body))
        assertNoFiles(body)
        const after = await download(server, input.sessionId, input.fileId)
        assert.equal(after.status, 200)
        assert.equal(after.bytes.toString(), original)
        await assertStillServing(server)
      })

      test('filling /mnt/data from Bash (head -c 8M in a loop) fails with "No space left on device"', async () => {
        const { body } = await run(server, 'bash',
          'for i in $(seq 100); do head -c 8M /dev/zero > /mnt/data/fill$i || { echo "failed at $i"; exit 3; }; done')
        assert.equal(body.status, 'error', describeRun(body))
        assert.match(body.stdout, /^failed at \d+$/m)
        assert.match(body.stderr, /No space left on device/)
        assertNoFiles(body)
        await assertStillServing(server)
      })

      for (const dir of ['/tmp', '/dev/shm']) {
        test(`filling ${dir} from Python fails with ENOSPC (No space left on device)`, async () => {
          const { body } = await run(server, 'py', code(`
            i = 0
            while True:
                with open(f"${dir}/fill{i}.bin", "wb") as f:
                    for _ in range(8):
                        f.write(b"x" * 1024 * 1024)
                i += 1
          `))
          assert.ok(['error', 'oom'].includes(body.status), describeRun(body))
          if (body.status === 'error') assert.match(body.stderr, /OSError: \[Errno 28\] No space left on device/, describeRun(body))
          await assertStillServing(server)
        })
      }

      test('filling /tmp from Bash fails with "No space left on device"', async () => {
        const { body } = await run(server, 'bash',
          'for i in $(seq 100); do head -c 8M /dev/zero > /tmp/fill$i || { echo "failed at $i"; exit 3; }; done')
        assert.equal(body.status, 'error', describeRun(body))
        assert.match(body.stderr, /No space left on device/)
        await assertStillServing(server)
      })
    })

    describe('file size', () => {
      test('a Python file truncated past MAX_FILE_SIZE_MB fails with EFBIG (File too large)', async () => {
        const { body } = await run(server, 'py', code(`
          with open("/mnt/data/huge.bin", "wb") as f:
              f.truncate(${LIMITS.maxFileMb + 8} * 1024 * 1024)
        `))
        assert.equal(body.status, 'error', describeRun(body))
        assert.match(body.stderr, /OSError: \[Errno 27\] File too large/)
        assertNoFiles(body)
        await assertStillServing(server)
      })

      test('Bash truncate -s and head -c past MAX_FILE_SIZE_MB die of SIGXFSZ ("File size limit exceeded"); what is kept is at most the limit', async () => {
        const { body } = await run(server, 'bash', code(`
          truncate -s ${LIMITS.maxFileMb + 8}M /mnt/data/huge.bin; echo "truncate rc=$?"
          head -c ${LIMITS.maxFileMb + 8}M /dev/zero > /mnt/data/long.bin; echo "head rc=$?"
        `))
        assert.match(body.stdout, /truncate rc=153\nhead rc=153/, describeRun(body))
        assert.match(body.stderr, /File size limit exceeded/)
        for (const file of body.files as Json[]) {
          const size = await storedSize(server, file.storage_session_id, file.id)
          assert.ok(size <= LIMITS.maxFileMb * MiB, `${file.name} was kept with ${size} bytes`)
        }
        await assertStillServing(server)
      })

      test('a Python sparse file (seek 10 GB, write 1 byte) is refused with EFBIG (File too large)', async () => {
        const { body } = await run(server, 'py', code(`
          with open("/mnt/data/sparse.bin", "wb") as f:
              f.seek(10 * 1024 ** 3)
              f.write(b"x")
        `))
        assert.equal(body.status, 'error', describeRun(body))
        assert.match(body.stderr, /OSError: \[Errno 27\] File too large/)
        assertNoFiles(body)
        await assertStillServing(server)
      })

      test('a Bash sparse file (dd seek=10G) dies of SIGXFSZ ("File size limit exceeded") and nothing larger than the limit is kept', async () => {
        const { body } = await run(server, 'bash', 'dd if=/dev/zero of=/mnt/data/sparse.bin bs=1 count=1 seek=10G 2>&1; echo "dd rc=$?"')
        assert.match(body.stdout + body.stderr, /File size limit exceeded/, describeRun(body))
        for (const file of body.files as Json[]) {
          const size = await storedSize(server, file.storage_session_id, file.id)
          assert.ok(size <= LIMITS.maxFileMb * MiB, `${file.name} was kept with ${size} bytes`)
        }
        await assertStillServing(server)
      })

      test('three sparse files just under MAX_FILE_SIZE_MB (1 byte of data each) come back no larger than the per-file cap', async (t) => {
        const { body } = await run(server, 'py', code(`
          for i in range(3):
              with open(f"/mnt/data/sparse{i}.bin", "wb") as f:
                  f.seek(${LIMITS.maxFileMb - 1} * 1024 * 1024)
                  f.write(b"x")
        `))
        assert.equal(body.status, 'ok', describeRun(body))
        let total = 0
        for (const file of body.files as Json[]) {
          const size = await storedSize(server, file.storage_session_id, file.id)
          assert.ok(size <= LIMITS.maxFileMb * MiB, `${file.name} was kept with ${size} bytes`)
          total += size
        }
        // stored bytes are bounded by the output caps (MAX_OUTPUT_TOTAL_MB), not by the work-directory quota:
        // a sparse file costs the jail's tmpfs one page; this records how much one such run stores
        assert.ok(total <= 256 * MiB, `${total} bytes stored`)
        t.diagnostic(`${body.files.length} files, ${total} bytes stored from a ${LIMITS.workdirMb} MiB work directory`)
        await assertStillServing(server)
      })
    })

    describe('many and deep files', () => {
      const many: Array<['py' | 'bash', string]> = [
        ['py', code(`
          made = 0
          try:
              for i in range(100000):
                  open(f"/mnt/data/f{i}", "w").close()
                  made += 1
          except OSError as error:
              print(repr(error))
          print("made", made)
        `)],
        ['bash', 'cd /mnt/data; for i in $(seq 100000); do : > f$i || break; done; echo made $(ls | wc -l)'],
      ]
      for (const [lang, source] of many) {
        test(`100 000 small files from ${lang === 'py' ? 'Python' : 'Bash'}: the run ends within the time limit and at most MAX_OUTPUT_FILES come back, with a note`, async () => {
          const { body, elapsedMs } = await run(server, lang, source)
          assert.ok(['ok', 'error', 'timeout'].includes(body.status), describeRun(body))
          assert.ok(elapsedMs <= TIMEOUT_BOUND_MS + 2000, `answered after ${Math.round(elapsedMs)} ms`)
          assert.ok(body.files.length <= LIMITS.maxOutputFiles, `${body.files.length} files came back`)
          if (body.status === 'ok') {
            assert.equal(body.files.length, LIMITS.maxOutputFiles)
            assert.match(body.stderr, /output file\(s\) were not kept: the limits are 10 files/, describeRun(body))
          } else if (body.status === 'timeout') {
            assertStoppedBy(body, 'timeout')
          }
          await assertStillServing(server)
        })
      }

      const deep: Array<['py' | 'bash', string]> = [
        ['py', code(`
          import os
          os.chdir("/mnt/data")
          for _ in range(2000):
              os.mkdir("d")
              os.chdir("d")
          with open("leaf.txt", "w") as f:
              f.write("deep")
          print("depth", os.getcwd().count("/d"))
        `)],
        ['bash', 'cd /mnt/data; p=$(printf "d/%.0s" $(seq 2000)); mkdir -p "$p" && echo deep > "$p"leaf.txt; echo depth $(find . -type d | wc -l)'],
      ]
      for (const [lang, source] of deep) {
        const language = lang === 'py' ? 'Python' : 'Bash'
        test(`directories 2000 deep from ${language}: the run completes ok with a small, well-formed answer`, async () => {
          const { body, elapsedMs } = await run(server, lang, source)
          assert.equal(body.status, 'ok', describeRun(body))
          assert.match(body.stdout, /depth 200[01]/)
          assert.ok(elapsedMs < LIMITS.timeoutMs, `answered after ${Math.round(elapsedMs)} ms`)
          assert.ok(JSON.stringify(body).length < 16_384, `answer of ${JSON.stringify(body).length} bytes`)
          assert.ok(body.files.length <= 1)
          await assertStillServing(server)
        })

        test(`a file written 2000 directories deep from ${language} is either returned or named in a note`, async () => {
          const { body } = await run(server, lang, source)
          assert.equal(body.status, 'ok', describeRun(body))
          const returned = (body.files as Json[]).some((file) => String(file.name).endsWith('leaf.txt'))
          assert.ok(returned || /deep|depth|not kept|skipped/i.test(body.stderr),
            `leaf.txt was silently dropped: files ${JSON.stringify(body.files)}, stderr ${JSON.stringify(body.stderr)}`)
        })
      }
    })

    describe('processes left behind', () => {
      test('a Python double fork writing a heartbeat every 100 ms dies with its execution: no beat after the answer, nothing left in any cgroup', async () => {
        const { body } = await run(server, 'py', code(`
          import os, time
          if os.fork() == 0:
              os.setsid()
              if os.fork() == 0:
                  while True:
                      with open("/mnt/data/heartbeat.txt", "a") as f:
                          f.write(f"{time.time()}\\n")
                      with open("/tmp/marker", "a") as f:
                          f.write("x")
                      time.sleep(0.1)
              os._exit(0)
          time.sleep(0.5)
          print("parent done")
        `))
        const answeredAt = Date.now() / 1000
        assert.equal(body.status, 'ok', describeRun(body))
        const heartbeat = (body.files as Json[]).find((file) => file.name === 'heartbeat.txt')
        assert.ok(heartbeat, `no heartbeat.txt in ${describeRun(body)}`)
        const beats = (await download(server, heartbeat.storage_session_id, heartbeat.id)).bytes.toString().trim().split('\n').map(Number)
        assert.ok(beats.length >= 3, `only ${beats.length} beats: the grandchild did not run`)
        assert.ok(beats.every((beat) => beat <= answeredAt), `a beat was written after the answer: ${beats.at(-1)} > ${answeredAt}`)

        await sleep(500)
        const next = await run(server, 'py', code(`
          import os
          print(os.path.exists("/tmp/marker"), os.path.exists("/mnt/data/heartbeat.txt"), sorted(p for p in os.listdir("/proc") if p.isdigit()))
        `))
        assert.equal(next.body.stdout, "False False ['1']\n", describeRun(next.body))
        const leftovers = await settleLeftovers(server)
        assert.deepEqual(leftovers, [], 'processes left in the server\'s cgroups')
        await assertStillServing(server)
      })

      test('Bash nohup sleep 1000 &, setsid sleep and a setsid heartbeat loop are all gone after the answer, in the cgroups and on the host', async () => {
        const { body } = await run(server, 'bash', code(`
          nohup sleep 1000 >/dev/null 2>&1 &
          setsid sleep 1001 >/dev/null 2>&1 &
          (setsid bash -c 'while :; do date +%s.%N >> /mnt/data/beat.txt; sleep 0.1; done' >/dev/null 2>&1 &)
          disown -a
          sleep 0.5
          echo started
        `))
        const answeredAt = Date.now() / 1000
        assert.equal(body.status, 'ok', describeRun(body))
        assert.equal(body.stdout, 'started\n')
        const beat = (body.files as Json[]).find((file) => file.name === 'beat.txt')
        assert.ok(beat, `no beat.txt in ${describeRun(body)}`)
        const beats = (await download(server, beat.storage_session_id, beat.id)).bytes.toString().trim().split('\n').map(Number)
        // one beat proves the loop ran (a machine under software emulation managed only one in the 0.5 s)
        assert.ok(beats.length >= 1 && beats.every((value) => value <= answeredAt), `beats: ${beats.join(', ')}; answered at ${answeredAt}`)

        const leftovers = await settleLeftovers(server)
        assert.deepEqual(leftovers, [], 'processes left in the server\'s cgroups')
        // counted three times over a second: the tree holds the jail and its warm workers, nothing else
        for (let i = 0; i < 3; i++) {
          assert.deepEqual(leftoverProcesses(server), [])
          const inTree = new Set(jailProcesses(server).map((process) => process.pid))
          const outside = hostProcessesOfJail(server).filter((process) => !inTree.has(process.pid))
          assert.deepEqual(outside, [], 'processes of the jail\'s uids outside the server\'s cgroups')
          assert.deepEqual(hostProcessesOfJail(server).filter((process) => /sleep|bash/.test(process.comm)), [])
          await sleep(400)
        }
        await assertStillServing(server)
      })
    })
  })
}

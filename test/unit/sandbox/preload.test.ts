import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

// The zygote draws a plot before forking so that workers start with the plotting code warm. A worker
// closes every descriptor it did not open itself, so whatever the warm-up opened must be closed
// again, or the worker's first plot reads a font through a closed descriptor (and crashes).

const sandboxDir = path.resolve(import.meta.dirname, '..', '..', '..', 'sandbox')
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

const script = `
import os, sys
sys.path.insert(0, ${JSON.stringify(sandboxDir)})
import preload
preload.preload(["numpy", "pandas", "matplotlib"])
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
opened = []
for fd in fds:
    try:
        opened.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
print("open files:", [name for name in opened if name.startswith("/usr") or name.endswith((".ttf", ".otf", ".afm"))])
# what a worker does to the zygote's descriptors, then a plot with text in several fonts
os.closerange(3, 1 << 20)
import matplotlib.pyplot as plt
figure, axes = plt.subplots()
axes.plot([1, 3, 2])
axes.set_title("bold Ωmega $\\\\alpha^2$", fontweight="bold")
axes.set_xlabel("italic", style="italic")
figure.savefig(os.path.join(sys.argv[1], "after.png"))
print("plotted", os.path.getsize(os.path.join(sys.argv[1], "after.png")) > 1000)
`

test('the zygote\'s plotting warm-up leaves no file open, and a worker can plot after closing the zygote\'s descriptors', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'warden-preload-'))
  try {
    const result = spawnSync(python, ['-B', '-c', script, dir], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, MPLCONFIGDIR: dir, MPLBACKEND: 'Agg' },
    })
    assert.equal(result.status, 0, `python exited ${result.status} (signal ${result.signal}): ${result.stderr}`)
    assert.equal(result.stderr.includes('Bad file descriptor'), false, result.stderr)
    assert.match(result.stdout, /^open files: \[\]$/m)
    assert.match(result.stdout, /^plotted True$/m)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

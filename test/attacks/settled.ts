import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { api, type RunningServer } from '../helpers/server.ts'
import path from 'node:path'
import { hostProcessesOfJail, jailProcesses, leftoverProcesses, type JailProcess, type Json } from './helpers.ts'

export async function health (server: RunningServer): Promise<Json> {
  return await (await api(server, '/health')).json() as Json
}

/**
 * Wait until nothing is in flight (no busy, waiting or starting worker, no slot spawning or cleaning,
 * no live worker, no process of a finished run left on the host), then check that /health matches what
 * the host sees: no zygote restarted since `before`, no slot retired, every occupied slot holding a warm
 * or a prepared worker, and as many of each as the host shows. A prepared worker (Node, TypeScript, R,
 * PHP: its interpreter started ahead) is the slot's namespace init with one interpreter running
 * `/tmp/.warden/prepare…` beside it. The answer is the settled /health.
 */
export async function assertSettled (server: RunningServer, before: Json, settleMs = 20_000): Promise<Json> {
  let after: Json = {}
  const deadline = Date.now() + settleMs
  for (;;) {
    after = await health(server)
    const { pool, live } = after
    const settled = pool.busy === 0 && pool.waiting === 0 && pool.starting === 0 && (pool.slots.spawning ?? 0) === 0 &&
      (pool.slots.cleaning ?? 0) === 0 && (live?.workers ?? 0) === 0
    // a worker that went back to the pool is warm a moment after its slot is occupied again
    const idle = pool.warm + preparedCount(pool)
    const balanced = (pool.slots.occupied ?? 0) === idle && warmWorkerProcesses(server).length === idle && preparedGroups(server).size === preparedCount(pool)
    if (settled && balanced && unexplainedProcesses(server).length === 0) break
    if (settled && Date.now() > deadline) break // the checks below say what is wrong
    if (Date.now() > deadline) assert.fail(`the server did not settle: ${JSON.stringify({ pool, live })}; leftovers ${JSON.stringify(unexplainedProcesses(server))}`)
    await sleep(100)
  }
  assert.equal(after.pool.jails_started, before.pool.jails_started, 'a zygote exited')
  assert.equal(after.pool.zygotes_alive, after.pool.zygotes)
  assert.equal(after.pool.slots.dead ?? 0, 0, `slots were retired: ${JSON.stringify(after.pool.slots)}`)
  const idle = after.pool.warm + preparedCount(after.pool)
  assert.equal(after.pool.slots.occupied ?? 0, idle, `every occupied slot holds a warm or prepared worker: ${JSON.stringify(after.pool)}`)
  const workers = warmWorkerProcesses(server)
  assert.equal(unexplainedProcesses(server).length, 0, `processes of finished runs are left: ${JSON.stringify(unexplainedProcesses(server))}`)
  assert.equal(workers.length, idle, `/health counts ${after.pool.warm} warm and ${preparedCount(after.pool)} prepared workers, the host sees ${workers.length}`)
  assert.equal(preparedGroups(server).size, preparedCount(after.pool), `/health counts ${preparedCount(after.pool)} prepared workers, the host sees ${preparedGroups(server).size}`)
  return after
}

/** The workers waiting in their slots, warm or prepared: each slot's namespace init. */
function warmWorkerProcesses (server: RunningServer): JailProcess[] {
  return jailProcesses(server).filter((process) => path.basename(process.cgroup) !== 'zygote' && process.nsPids.at(-1) === 1 && process.cmdline.includes('zygote.py'))
}

function preparedCount (pool: Json): number {
  return Object.values((pool.prepared ?? {}) as Record<string, number>).reduce((sum, count) => sum + count, 0)
}

/** Slots holding a prepared worker: the namespace init and exactly one interpreter started ahead, nothing else. */
function preparedGroups (server: RunningServer): Set<string> {
  const byGroup = new Map<string, JailProcess[]>()
  for (const process of jailProcesses(server)) byGroup.set(process.cgroup, [...byGroup.get(process.cgroup) ?? [], process])
  const groups = new Set<string>()
  for (const [group, processes] of byGroup) {
    const init = processes.filter((process) => process.nsPids.at(-1) === 1 && process.cmdline.includes('zygote.py'))
    const interpreters = processes.filter((process) => process.cmdline.includes('/tmp/.warden/prepare'))
    if (processes.length === 2 && init.length === 1 && interpreters.length === 1) groups.add(group)
  }
  return groups
}

/** Processes that are neither jail launchers, zygotes, warm workers nor prepared workers. */
function unexplainedProcesses (server: RunningServer): JailProcess[] {
  const prepared = preparedGroups(server)
  return leftoverProcesses(server).filter((process) => !prepared.has(process.cgroup))
}

export interface SurfaceChecks {
  /** the server's JUPYTER_TOKEN: its kernel list must be empty */
  jupyterToken: string
  /** the kinds of live worker the test made: each must have been created, and every one must have ended */
  kinds: Array<'kernel' | 'ptc' | 'terminal'>
  /** how long live workers may take to end (terminals idle out, pauses expire) */
  settleMs?: number
}

/**
 * Every long-lived surface is free: no live worker of any kind (/health and /metrics agree), as many of
 * each kind ended as were created (and some were: a check over nothing fails), no tool-calling run
 * running or paused, no kernel listed, and no process of the jail's uids outside the server's cgroup tree.
 */
export async function assertSurfacesFree (server: RunningServer, { jupyterToken, kinds, settleMs = 30_000 }: SurfaceChecks): Promise<void> {
  const deadline = Date.now() + settleMs
  let live: Json = {}
  for (;;) {
    live = (await health(server)).live
    assert.ok(live !== null && live !== undefined, '/health has no live workers section')
    if (live.workers === 0 && Object.values(live.by_kind as Record<string, number>).every((count) => count === 0)) break
    if (Date.now() > deadline) assert.fail(`live workers are left: ${JSON.stringify(live)}`)
    await sleep(250)
  }
  const metrics = parseMetrics(await (await fetch(`${server.baseUrl}/metrics`)).text())
  const value = (name: string, labels: Record<string, string>) => metrics.find((sample) => sample.name === name && Object.entries(labels).every(([key, wanted]) => sample.labels[key] === wanted))?.value
  assert.equal(value('warden_ptc_runs', { state: 'running' }), 0, 'tool-calling runs are running (or the gauge is missing)')
  assert.equal(value('warden_ptc_runs', { state: 'paused' }), 0, 'tool-calling runs are paused (or the gauge is missing)')
  for (const sample of metrics.filter((entry) => entry.name === 'warden_live_workers')) assert.equal(sample.value, 0, `/metrics counts ${sample.value} live ${sample.labels.kind}`)
  for (const kind of kinds) {
    const events = metrics.filter((sample) => sample.name === 'warden_live_workers_events_total' && sample.labels.kind === kind)
    const created = events.find((sample) => sample.labels.event === 'created')?.value ?? 0
    const ended = events.filter((sample) => sample.labels.event !== 'created').reduce((sum, sample) => sum + sample.value, 0)
    assert.ok(created > 0, `no live worker of kind ${kind} was ever created: nothing to count`)
    assert.equal(ended, created, `${created} live ${kind} workers created, ${ended} ended`)
  }
  const listed = await fetch(`${server.baseUrl}/api/kernels?token=${jupyterToken}`)
  assert.equal(listed.status, 200, 'the kernel list did not answer')
  assert.deepEqual(await listed.json(), [], 'kernels are left')
  const inTree = new Set(jailProcesses(server).map((process) => process.pid))
  const outside = hostProcessesOfJail(server).filter((process) => !inTree.has(process.pid))
  assert.deepEqual(outside, [], 'processes of the jail uids run outside the server\'s cgroup tree')
}

interface Sample { name: string, labels: Record<string, string>, value: number }

/** The samples of a Prometheus text exposition (no comments). */
function parseMetrics (text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) continue
    const labels = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((label) => [label[1], label[2]]))
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) })
  }
  assert.ok(samples.length > 0, '/metrics has no samples')
  return samples
}

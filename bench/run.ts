/**
 * `npm run bench`: drive POST /exec at several concurrencies, for the warm pool and for a baseline with no
 * prewarming, and report latency, throughput, CPU and memory per scenario. Writes bench/results/latest.json
 * and latest.md. Settings (env): BENCH_URL (target a running server; no CPU/memory figures then),
 * BENCH_API_KEY, BENCH_DURATION_S (10), BENCH_CONCURRENCY (1,8,32), BENCH_BASELINE_CONCURRENCY (1,8),
 * BENCH_SCENARIOS (all; `languages` names the language rows, bench/languages.ts), BENCH_JAIL (nsjail where installed, else bwrap),
 * BENCH_SKIP_BASELINE, BENCH_LANGUAGE_RUNS (10 measured runs per language program and side), BENCH_LANGUAGES
 * (the lang values to measure; all installed), BENCH_COMPARE_REF (a commit, e.g. HEAD~1: its warm pool runs
 * beside this checkout's, row by row alternating, and the report shows both side by side); `terminal` names the
 * Open Terminal rows (bench/terminals.ts); `cluster` the rows of replicas on Redis and S3 (bench/cluster.ts,
 * results in cluster.json and cluster.md), which only run when named: they start a Redis, an s3rver and four
 * servers, and take 2–4 minutes (1m56s under a load of 4–10 on 2 cores, 3m53s under 9–17), at or past the
 * 2 minutes the default run may grow by.
 */
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { exportCommit, launchJupyterServer, launchServer, type BenchServer } from './launch.ts'
import { measureLanguages, renderLanguageTable } from './languages.ts'
import { describeCluster, measureCluster } from './cluster.ts'
import { describeIdleKernels, measureIdleKernels } from './kernels.ts'
import { describeTerminals, measureTerminals } from './terminals.ts'
import { findInstanceDirs, percentile, readCpu, sampleWorkerMemory, type InstanceDirs } from './measure.ts'
import { renderComparison, renderMarkdown, renderTable, targetsMet, type Mode, type Row } from './report.ts'
import { Client, scenarios, type Scenario } from './scenarios.ts'

const env = process.env
const durationMs = Number(env.BENCH_DURATION_S ?? 10) * 1000
const concurrencies = (env.BENCH_CONCURRENCY ?? '1,8,32').split(',').map(Number)
const baselineConcurrencies = (env.BENCH_BASELINE_CONCURRENCY ?? '1,8').split(',').map(Number)
const only = env.BENCH_SCENARIOS?.split(',')
// named, not `auto`, so each results file says which driver it measured (auto's first choice is nsjail)
const jail = env.BENCH_JAIL ?? (installed(env.NSJAIL_PATH ?? 'nsjail') ? 'nsjail' : 'bwrap')

function installed (command: string): boolean {
  if (command.includes('/')) return existsSync(command)
  return (env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(path.join(dir, command)))
}

interface Target { server: BenchServer, dirs: InstanceDirs | null }

async function start (mode: Mode): Promise<Target> {
  if (mode === 'jupyter-server') {
    const server = await launchJupyterServer()
    if (server === null) throw new Error('jupyter-server is not installed (apt-get install jupyter-server python3-ipykernel)')
    return { server, dirs: null }
  }
  if (env.BENCH_URL !== undefined && mode === 'warm') {
    return { server: { url: env.BENCH_URL, apiKey: env.BENCH_API_KEY ?? '', pid: null, stop: async () => {} }, dirs: null }
  }
  const repo = mode === 'previous' ? previous?.dir : undefined
  const server = await launchServer({ JAIL: jail, POOL_MODE: mode === 'previous' ? 'warm' : mode, POOL_MIN: env.POOL_MIN ?? '8', POOL_MAX: env.POOL_MAX ?? '8' }, repo)
  return { server, dirs: server.pid === null ? null : findInstanceDirs(server.pid) }
}

async function measure (target: Target, scenario: Scenario, mode: Mode, concurrency: number): Promise<Row> {
  const client = new Client(target.server.url, target.server.apiKey, concurrency + 1)
  // a jupyter_server has no /health: its rows have no pool or health figures
  const health = mode === 'jupyter-server' ? async () => ({ pool: { acquired_warm: 0, acquired_cold: 0, spawned: 0 } }) : async () => await client.health()
  const { pid } = target.server
  // warm-up: let the pool fill and the JIT settle, outside the measurement
  await Promise.all(Array.from({ length: Math.min(concurrency, 8) }, () => scenario.iteration(client).catch(() => [])))
  await new Promise((resolve) => setTimeout(resolve, 500))
  const idle = target.dirs === null ? null : sampleWorkerMemory(target.dirs)
  const cpuBefore = pid === null || target.dirs === null ? null : readCpu(pid, target.dirs)
  const healthBefore = await health()
  const latencies: number[] = []
  const healthLatencies: number[] = []
  let busyPeak = 0
  let zygotePeak = 0
  let errors = 0
  let firstError: string | null = null
  const sampler = setInterval(() => {
    if (target.dirs === null) return
    const sample = sampleWorkerMemory(target.dirs)
    busyPeak = Math.max(busyPeak, ...sample.busyBytes)
    zygotePeak = Math.max(zygotePeak, ...sample.zygoteBytes)
  }, 100)
  const started = performance.now()
  const deadline = started + durationMs
  const probing = { stop: false }
  const healthProbe = (async () => {
    while (!probing.stop) {
      const at = performance.now()
      await health()
      healthLatencies.push(performance.now() - at)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < deadline) {
      try {
        latencies.push(...await scenario.iteration(client))
      } catch (error) {
        errors++
        firstError ??= (error as Error).message
      }
    }
  }))
  const elapsedMs = performance.now() - started
  probing.stop = true
  clearInterval(sampler)
  await healthProbe
  const cpuAfter = pid === null || target.dirs === null ? null : readCpu(pid, target.dirs)
  const healthAfter = await health()
  await client.close()
  const warm = healthAfter.pool.acquired_warm - healthBefore.pool.acquired_warm
  const cold = healthAfter.pool.acquired_cold - healthBefore.pool.acquired_cold
  const sorted = [...latencies].sort((a, b) => a - b)
  const healthSorted = [...healthLatencies].sort((a, b) => a - b)
  const cpuMs = cpuBefore === null || cpuAfter === null
    ? null
    : (cpuAfter.serverMs - cpuBefore.serverMs) + ((cpuAfter.jailsMs ?? 0) - (cpuBefore.jailsMs ?? 0))
  return {
    scenario: scenario.name,
    mode,
    concurrency,
    executions: latencies.length,
    perSecond: latencies.length / (elapsedMs / 1000),
    p50: percentile(sorted, 0.5),
    p95: percentile(sorted, 0.95),
    p99: percentile(sorted, 0.99),
    max: sorted.at(-1) ?? Number.NaN,
    errors,
    firstError,
    cpuMsPerExecution: cpuMs === null || latencies.length === 0 ? null : cpuMs / latencies.length,
    poolHitRate: warm + cold === 0 ? null : warm / (warm + cold),
    idleWorkerBytes: idle === null || idle.idleBytes.length === 0 ? null : Math.max(...idle.idleBytes),
    busyWorkerPeakBytes: busyPeak === 0 ? null : busyPeak,
    zygoteBytes: zygotePeak === 0 ? null : zygotePeak,
    healthP50: percentile(healthSorted, 0.5),
    healthP99: percentile(healthSorted, 0.99),
  }
}

async function runMode (mode: Mode, levels: number[]): Promise<Row[]> {
  const target = await start(mode)
  const rows: Row[] = []
  try {
    for (const scenario of scenarios().filter((s) => (only === undefined || only.includes(s.name)) && (s.modes ?? ['warm', 'cold']).includes(mode === 'previous' ? 'warm' : mode))) {
      const prepareClient = new Client(target.server.url, target.server.apiKey, 1)
      await scenario.prepare?.(prepareClient)
      await prepareClient.close()
      for (const concurrency of levels.filter((level) => level <= (scenario.maxConcurrency ?? Infinity))) {
        const row = await measure(target, scenario, mode, concurrency)
        process.stderr.write(`${mode} ${scenario.name} c=${concurrency}: p50 ${row.p50.toFixed(1)} ms, ${row.perSecond.toFixed(1)}/s, errors ${row.errors}\n`)
        rows.push(row)
      }
    }
  } finally {
    await target.server.stop()
  }
  return rows
}

/**
 * This checkout's warm pool and the previous commit's, both started, every row measured on one and then
 * the other (which goes first alternates row by row), so both see the same machine at the same time.
 */
async function runCompared (levels: number[]): Promise<Row[]> {
  const targets = { warm: await start('warm'), previous: await start('previous') }
  const rows: Row[] = []
  let turn = 0
  try {
    for (const scenario of scenarios().filter((s) => (only === undefined || only.includes(s.name)) && (s.modes ?? ['warm', 'cold']).includes('warm'))) {
      for (const target of Object.values(targets)) {
        const prepareClient = new Client(target.server.url, target.server.apiKey, 1)
        await scenario.prepare?.(prepareClient)
        await prepareClient.close()
      }
      for (const concurrency of levels.filter((level) => level <= (scenario.maxConcurrency ?? Infinity))) {
        const order: Mode[] = turn++ % 2 === 0 ? ['warm', 'previous'] : ['previous', 'warm']
        for (const mode of order) {
          const row = await measure(targets[mode as 'warm' | 'previous'], scenario, mode, concurrency)
          process.stderr.write(`${mode} ${scenario.name} c=${concurrency}: p50 ${row.p50.toFixed(1)} ms, p99 ${row.p99.toFixed(1)} ms, ${row.perSecond.toFixed(1)}/s, CPU ${row.cpuMsPerExecution?.toFixed(2) ?? '–'} ms/exec, errors ${row.errors}\n`)
          rows.push(row)
        }
      }
    }
  } finally {
    await Promise.all(Object.values(targets).map(async (target) => await target.server.stop()))
  }
  return rows
}

const previous = env.BENCH_COMPARE_REF === undefined ? null : await exportCommit(env.BENCH_COMPARE_REF)
if (previous !== null) process.stderr.write(`comparing with ${env.BENCH_COMPARE_REF} (${previous.commit}), exported to ${previous.dir}\n`)
const wantsRegular = only === undefined || scenarios().some((scenario) => only.includes(scenario.name))
const warm = wantsRegular ? (previous === null ? await runMode('warm', concurrencies) : await runCompared(concurrencies)) : []
const cold = wantsRegular && env.BENCH_SKIP_BASELINE === undefined ? await runMode('cold', baselineConcurrencies) : []
const wantsJupyter = only === undefined || only.some((name) => name.startsWith('jupyter-'))
const jupyter = env.BENCH_SKIP_BASELINE === undefined && wantsJupyter && existsSync('/usr/bin/jupyter-server') ? await runMode('jupyter-server', baselineConcurrencies) : []
const kernels = env.BENCH_URL === undefined && wantsJupyter ? await measureIdleKernels() : null
const wantsLanguages = env.BENCH_URL === undefined && (only === undefined || only.includes('languages'))
const languageOptions = { runs: Number(env.BENCH_LANGUAGE_RUNS ?? 10), jail, only: env.BENCH_LANGUAGES?.split(','), log: (line: string) => process.stderr.write(`${line}\n`) }
const languages = wantsLanguages ? await measureLanguages(languageOptions) : []
const previousLanguages = wantsLanguages && previous !== null ? await measureLanguages({ ...languageOptions, repo: previous.dir }) : []
await previous?.remove()
const terminals = env.BENCH_URL === undefined && (only === undefined || only.includes('terminal'))
  ? await measureTerminals({ concurrencies: baselineConcurrencies, durationMs, jail })
  : null
const cluster = env.BENCH_URL === undefined && only?.includes('cluster') === true
  ? await measureCluster({ durationMs, jail, log: (line) => process.stderr.write(`${line}\n`) })
  : null
const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}`
const date = new Date().toISOString()
const outDir = path.resolve(import.meta.dirname, 'results')
await mkdir(outDir, { recursive: true })
const languageTable = (languages.length === 0 ? '' : `## Languages: Warden's warm p50 against the bare toolchain (c=1)\n\n${renderLanguageTable(languages)}\n`) +
  (previousLanguages.length === 0 ? '' : `\n## Languages of ${previous?.commit ?? ''}, measured after them in the same run\n\n${renderLanguageTable(previousLanguages)}\n`)
const comparison = previous === null ? '' : `\n${renderComparison(warm, previous.commit)}`
if (wantsRegular || wantsJupyter) {
  const result = {
    date,
    machine,
    jail,
    durationPerRunS: durationMs / 1000,
    rows: [...warm, ...cold, ...jupyter],
    idleKernels: kernels,
    targets: targetsMet(warm),
  }
  await writeFile(path.join(outDir, 'latest.json'), JSON.stringify(result, null, 2) + '\n')
  await writeFile(path.join(outDir, 'latest.md'), renderMarkdown(result.rows, result.targets, machine) + comparison + (kernels === null ? '' : `\n${describeIdleKernels(kernels)}\n`))
  if (kernels !== null) process.stderr.write(`${describeIdleKernels(kernels)}\n`)
  process.stdout.write(renderTable(result.rows) + '\n\n' + result.targets.map((t) => `${t.met ? 'MET ' : 'MISS'} ${t.name}: ${t.actual}`).join('\n') + '\n' + comparison)
}
if (terminals !== null) {
  await writeFile(path.join(outDir, 'terminals.json'), JSON.stringify({ date, machine, jail, ...terminals }, null, 2) + '\n')
  await writeFile(path.join(outDir, 'terminals.md'), `Measured ${date} on ${machine}, jail ${jail}.\n\n${describeTerminals(terminals)}\n`)
  process.stdout.write(`\n${describeTerminals(terminals)}\n`)
}
if (cluster !== null) {
  await writeFile(path.join(outDir, 'cluster.json'), JSON.stringify({ date, machine, jail, durationPerRunS: durationMs / 1000, ...cluster }, null, 2) + '\n')
  await writeFile(path.join(outDir, 'cluster.md'), `Measured ${date} on ${machine}, jail ${jail}, ${durationMs / 1000} s per row.\n\n${describeCluster(cluster)}\n`)
  process.stdout.write(`\n${describeCluster(cluster)}\n`)
}
// the language rows have files of their own: a run of only them leaves the other results as they were
if (languages.length > 0) {
  await writeFile(path.join(outDir, 'languages.json'), JSON.stringify({ date, machine, jail, rows: languages, ...(previous === null ? {} : { previous: { commit: previous.commit, rows: previousLanguages } }) }, null, 2) + '\n')
  await writeFile(path.join(outDir, 'languages.md'), `Measured ${date} on ${machine}, jail ${jail}.\n\n${languageTable}`)
  process.stdout.write(`\n${languageTable}`)
}

/**
 * Warden's warm pool, the no-prewarm baseline, a real jupyter_server (the Jupyter rows' baseline), or
 * the warm pool of another commit (`previous`, BENCH_COMPARE_REF), measured row by row with this one.
 */
export type Mode = 'warm' | 'cold' | 'jupyter-server' | 'previous'

export interface Row {
  scenario: string
  mode: Mode
  concurrency: number
  executions: number
  perSecond: number
  p50: number
  p95: number
  p99: number
  max: number
  errors: number
  firstError: string | null
  cpuMsPerExecution: number | null
  poolHitRate: number | null
  idleWorkerBytes: number | null
  busyWorkerPeakBytes: number | null
  zygoteBytes: number | null
  healthP50: number
  healthP99: number
}

export interface TargetCheck { name: string, met: boolean, actual: string }

const ms = (value: number | null) => value === null || Number.isNaN(value) ? '–' : value.toFixed(1)
const mib = (value: number | null) => value === null ? '–' : (value / 2 ** 20).toFixed(1)

function find (rows: Row[], scenario: string, concurrency: number, mode: Mode = 'warm'): Row | undefined {
  return rows.find((row) => row.scenario === scenario && row.concurrency === concurrency && row.mode === mode)
}

/** The cold baseline's figure divided by the warm one: how many times faster the pool is. */
function speedup (rows: Row[], row: Row): string {
  if (row.mode !== 'warm') return ''
  const baseline = row.scenario.startsWith('jupyter-') ? 'jupyter-server' : 'cold'
  const base = find(rows, row.scenario, row.concurrency, baseline) ??
    rows.filter((r) => r.mode === baseline && r.scenario === row.scenario).sort((a, b) => b.concurrency - a.concurrency)[0]
  if (base === undefined) return ''
  return `${(base.p50 / row.p50).toFixed(1)}× p50, ${(row.perSecond / base.perSecond).toFixed(1)}× /s (vs c=${base.concurrency})`
}

const HEADER = ['scenario', 'mode', 'c', 'execs', 'exec/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'errors',
  'CPU ms/exec', 'pool hits', 'idle worker MiB', 'busy worker peak MiB', '/health p99 ms', 'vs baseline']

function cells (rows: Row[], row: Row): string[] {
  return [
    row.scenario, row.mode, String(row.concurrency), String(row.executions), row.perSecond.toFixed(1),
    ms(row.p50), ms(row.p95), ms(row.p99), ms(row.max), String(row.errors), ms(row.cpuMsPerExecution),
    row.poolHitRate === null ? '–' : `${Math.round(row.poolHitRate * 100)}%`,
    mib(row.idleWorkerBytes), mib(row.busyWorkerPeakBytes), ms(row.healthP99), speedup(rows, row),
  ]
}

export function renderTable (rows: Row[]): string {
  const table = [HEADER, ...rows.map((row) => cells(rows, row))]
  const widths = HEADER.map((_, column) => Math.max(...table.map((line) => line[column]?.length ?? 0)))
  return table.map((line) => line.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ')).join('\n')
}

export function renderMarkdown (rows: Row[], targets: TargetCheck[], machine: string): string {
  const lines = [
    `Machine: ${machine}`, '',
    `| ${HEADER.join(' | ')} |`,
    `|${HEADER.map(() => '---').join('|')}|`,
    ...rows.map((row) => `| ${cells(rows, row).join(' | ')} |`),
    '',
    '| target | met | measured |',
    '|---|---|---|',
    ...targets.map((target) => `| ${target.name} | ${target.met ? 'yes' : '**no**'} | ${target.actual} |`),
  ]
  return lines.join('\n') + '\n'
}

/** The targets of the performance issue, checked against the warm rows. */
export function targetsMet (rows: Row[]): TargetCheck[] {
  const checks: TargetCheck[] = []
  const add = (name: string, row: Row | undefined, value: (row: Row) => number, limit: number, atMost = true) => {
    if (row === undefined) return
    const actual = value(row)
    checks.push({ name, met: atMost ? actual <= limit : actual >= limit, actual: actual.toFixed(1) })
  }
  add('print(1) p50 ≤ 8 ms at c=1', find(rows, 'py-print', 1), (row) => row.p50, 8)
  add('print(1) p99 ≤ 30 ms at c=1', find(rows, 'py-print', 1), (row) => row.p99, 30)
  add('print(1) p99 ≤ 60 ms at c=8', find(rows, 'py-print', 8), (row) => row.p99, 60)
  add('pandas + matplotlib p50 ≤ 150 ms at c=1', find(rows, 'pandas-plot', 1), (row) => row.p50, 150)
  add('≥ 50 trivial executions/s at c=8', find(rows, 'py-print', 8), (row) => row.perSecond, 50, false)
  add('/health p99 ≤ 50 ms under overload (print(1), c=32)', find(rows, 'py-print', 32), (row) => row.healthP99, 50)
  add('Open WebUI block print p50 ≤ 30 ms (c=1)', find(rows, 'jupyter-print', 1), (row) => row.p50, 30)
  add('Open WebUI block print p99 ≤ 100 ms (c=1)', find(rows, 'jupyter-print', 1), (row) => row.p99, 100)
  add('Open WebUI block pandas + plt.show() p50 ≤ 200 ms (c=1)', find(rows, 'jupyter-plot', 1), (row) => row.p50, 200)
  // the CPU issue's goals: CPU of the whole tree (server, zygotes, workers) per trivial execution
  for (const scenario of ['py-print', 'bash-echo']) {
    add(`${scenario} CPU ≤ 7 ms per execution (c=8)`, find(rows, scenario, 8), (row) => row.cpuMsPerExecution ?? Number.NaN, 7)
  }
  add('≥ 250 trivial executions/s at c=8', find(rows, 'py-print', 8), (row) => row.perSecond, 250, false)
  add('print(1) p99 ≤ 15 ms at c=1', find(rows, 'py-print', 1), (row) => row.p99, 15)
  add('echo p99 ≤ 15 ms at c=1', find(rows, 'bash-echo', 1), (row) => row.p99, 15)
  // a tool-calling round (pause, answer, continuation, resume) adds at most 5 ms beyond the tool
  const ptc = find(rows, 'ptc-no-tools', 1)
  add('PTC: p50 added per round ≤ 5 ms (10 rounds against none, c=1)', find(rows, 'ptc-10-rounds', 1), (row) => (row.p50 - (ptc?.p50 ?? Number.NaN)) / 10, 5)
  // a persisted workspace is no slower than staging the same files as inputs
  const injected = find(rows, 'workspace-injected', 1)
  add('stateful workspace p50 ≤ the same files injected (c=1), ratio', find(rows, 'workspace-stateful', 1), (row) => row.p50 / (injected?.p50 ?? Number.NaN), 1)
  return checks
}

/**
 * This checkout's warm rows beside the same rows of the previous commit (mode `previous`), measured
 * alternately in one run: each figure as `this / previous` and their ratio.
 */
export function renderComparison (rows: Row[], previous: string): string {
  const header = ['scenario', 'c', 'exec/s', 'p50 ms', 'p99 ms', 'CPU ms/exec', 'errors']
  const pair = (now: number | null, before: number | null, digits = 1) => {
    if (now === null || before === null || Number.isNaN(now) || Number.isNaN(before)) return '–'
    return `${now.toFixed(digits)} / ${before.toFixed(digits)} (${(now / before).toFixed(2)}×)`
  }
  const lines = [`This checkout / ${previous}, the same rows alternating in one run:`, '', `| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`]
  for (const row of rows.filter((r) => r.mode === 'warm')) {
    const before = find(rows, row.scenario, row.concurrency, 'previous')
    if (before === undefined) continue
    lines.push(`| ${row.scenario} | ${row.concurrency} | ${pair(row.perSecond, before.perSecond)} | ${pair(row.p50, before.p50)} | ${pair(row.p99, before.p99)} | ${pair(row.cpuMsPerExecution, before.cpuMsPerExecution, 2)} | ${row.errors} / ${before.errors} |`)
  }
  return lines.join('\n') + '\n'
}

/**
 * The language rows of `npm run bench`: for every installed language, a hello world and a small real
 * program (sort 100 000 numbers read from a file, write them out), Warden's warm p50 at concurrency 1
 * against the same toolchain started bare on this machine (no jail, no HTTP, the usual commands, see
 * bareCommand) in the same run; the two sides alternate run by run, so both see the same machine.
 * Goals (issue 15): interpreted languages at most 0.5x the bare start, compiled ones at most 1.0x the
 * bare compile and run.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { checkLanguages, LIBRECHAT_LANGUAGES, programFor, resolveLanguage } from '../src/exec/languages/index.ts'
import { findJavaEntry } from '../src/exec/languages/java.ts'
import { NODE } from '../src/exec/languages/language.ts'
import { loadConfig } from '../src/config.ts'
import type { Program } from '../src/pool/run.ts'
import { PROGRAMS, type LanguagePrograms } from '../test/helpers/programs.ts'
import { launchServer } from './launch.ts'
import { percentile } from './measure.ts'
import { Client } from './scenarios.ts'

export interface LanguageRow {
  lang: string
  /** `hello-cached`: the same hello world by the same user each run, so a compiled one hits the compile cache */
  program: 'hello' | 'hello-cached' | 'sort-100k'
  kind: 'interpreted' | 'compiled'
  runs: number
  wardenP50: number
  bareP50: number
  /** Warden's p50 over the bare p50 */
  ratio: number
  goal: number
  /** of Warden's runs, the share that found a prepared interpreter (null: the language has none) */
  preparedShare: number | null
  /** of Warden's runs, the share whose build the compile cache had (null: none was looked up) */
  cacheHitShare: number | null
  errors: number
  firstError: string | null
}

const NUMBERS = 100_000
/** what the language runs of one execution may take at most here */
const LIMITS = loadConfig({ AUTH: 'none' }).limits

/** 100 000 integers, one a line, the same for both sides; and their sum, which both must print. */
function numbersFile (): { text: string, sum: number } {
  let seed = 42
  const values = Array.from({ length: NUMBERS }, () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
    return seed - 1_073_741_824
  })
  return { text: values.join('\n') + '\n', sum: values.reduce((a, b) => a + b, 0) }
}

/** Run one process to its end; resolves with its exit code and output. */
function runProcess (argv: string[], cwd: string, env: Record<string, string>): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve, reject) => {
    const [command, ...args] = argv
    const child = spawn(command as string, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/** How someone runs a file by hand with the toolchain: Warden's numbers are held against these. */
interface BareCommand { file: string, steps: string[][] }

/**
 * The toolchain's usual commands, in a work directory holding the source (and numbers.txt). The compile
 * flags are Warden's where Warden chose them for the program's sake (-O2 for C, C++ and Fortran, Rust's
 * edition), not where they are Warden's warm state (Go's tools, Rust's shared libstd, the JVM flags);
 * TypeScript is transpiled as Warden does it cold (the typescript package, then Node). Go keeps one build
 * cache across runs, as a developer's machine does.
 */
function bareCommand (lang: string, code: string): BareCommand | null {
  const language = resolveLanguage(lang)
  if (language === null) return null
  const cold = programFor(language, { code, limits: LIMITS })
  const java = findJavaEntry(code)
  const table: Record<string, BareCommand> = {
    py: { file: 'main.py', steps: [['/usr/bin/python3', 'main.py']] },
    bash: { file: 'main.sh', steps: [['/bin/bash', 'main.sh']] },
    js: { file: 'main.js', steps: [[NODE, 'main.js']] },
    php: { file: 'main.php', steps: [['/usr/bin/php', 'main.php']] },
    r: { file: 'main.R', steps: [['/usr/bin/Rscript', 'main.R']] },
    ts: { file: 'main.ts', steps: cold.runner === 'steps' ? cold.steps.map((step) => step.argv.filter((item) => item !== '{args}').map((item) => item.replace('{source}', 'main.ts').replace('{dir}/', ''))) : [] },
    c: { file: 'main.c', steps: [['/usr/bin/gcc', '-O2', '-o', 'main', 'main.c', '-lm'], ['./main']] },
    cpp: { file: 'main.cpp', steps: [['/usr/bin/g++', '-O2', '-o', 'main', 'main.cpp'], ['./main']] },
    f90: { file: 'main.f90', steps: [['/usr/bin/gfortran', '-O2', '-o', 'main', 'main.f90'], ['./main']] },
    d: { file: 'main.d', steps: [['/usr/bin/gdc', '-o', 'main', 'main.d'], ['./main']] },
    rs: { file: 'main.rs', steps: [['/usr/bin/rustc', '--edition', '2021', '-o', 'main', 'main.rs'], ['./main']] },
    go: { file: 'main.go', steps: [['/usr/bin/go', 'build', '-o', 'main', 'main.go'], ['./main']] },
    java: { file: java.sourceFile, steps: [['/usr/bin/javac', '-d', '.', java.sourceFile], ['/usr/bin/java', '-cp', '.', java.mainClass]] },
  }
  return table[lang] ?? null
}

/** Run a bare command in a fresh work directory; ms from the first step's start to the last one's end, and its stdout. */
async function runBare (command: BareCommand, code: string, input: string | null, goCache: string): Promise<{ ms: number, stdout: string }> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'warden-bench-bare-'))
  try {
    if (input !== null) await writeFile(path.join(work, 'numbers.txt'), input)
    await writeFile(path.join(work, command.file), code)
    const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: work, TMPDIR: work, LANG: 'C.UTF-8', GOCACHE: goCache, GOPATH: path.join(work, 'go') }
    const started = performance.now()
    let stdout = ''
    for (const argv of command.steps) {
      const result = await runProcess(argv, work, env)
      if (result.code !== 0) throw new Error(`bare ${argv[0]} exited ${result.code}: ${result.stderr.slice(0, 300)}`)
      stdout = result.stdout
    }
    return { ms: performance.now() - started, stdout }
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

/** Until the server has a prepared worker for the language (at most 5 s), when it has them at all. */
async function preparedReady (url: string, id: string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const health = await (await fetch(`${url}/v1/health`)).json() as { pool: { prepared?: Record<string, number> } }
    if ((health.pool.prepared?.[id] ?? 0) > 0) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

export interface LanguageBenchOptions {
  /** measured runs per program and side, after two warm-up runs */
  runs: number
  jail: string
  /** the lang values to measure (default: every installed LibreChat language) */
  only?: string[]
  log: (line: string) => void
  /** the checkout whose server is measured (BENCH_COMPARE_REF's export); this one by default */
  repo?: string
}

/** Start a Warden server of its own, measure every language against its bare toolchain, stop the server. */
export async function measureLanguages (options: LanguageBenchOptions): Promise<LanguageRow[]> {
  const installed = checkLanguages().available
  const langs = LIBRECHAT_LANGUAGES.filter((lang) => installed.includes(resolveLanguage(lang) as never) && (options.only === undefined || options.only.includes(lang)))
  const server = await launchServer({ JAIL: options.jail, POOL_MIN: '4', POOL_MAX: '8' }, options.repo)
  const client = new Client(server.url, server.apiKey, 2)
  const rows: LanguageRow[] = []
  const goCache = await mkdtemp(path.join(os.tmpdir(), 'warden-bench-gocache-'))
  try {
    const numbers = numbersFile()
    const uploaded = await client.upload('numbers.txt', Buffer.from(numbers.text))
    const files = [{ id: uploaded.files[0]?.fileId, storage_session_id: uploaded.storage_session_id, name: 'numbers.txt' }]
    for (const lang of langs) {
      const language = resolveLanguage(lang)
      if (language === null) continue
      const programs = PROGRAMS[lang] as LanguagePrograms
      const template = programFor(language, { code: '', limits: LIMITS })
      const kind = stepCount(template) > 1 ? 'compiled' : 'interpreted'
      const hasPrepared = template.runner === 'steps' && template.prepare !== undefined
      // each hello run is another user's (a compile cache never serves one user's build to another), so a
      // compiled one builds every time; hello-cached is one user's, so after the first run it is a hit
      const cases = [
        { program: 'hello' as const, code: programs.hello, input: null, expect: 'hello, world' },
        ...(kind === 'compiled' ? [{ program: 'hello-cached' as const, code: programs.hello, input: null, expect: 'hello, world' }] : []),
        // relative paths: Warden runs the code in /mnt/data, the bare side in its own work directory
        { program: 'sort-100k' as const, code: programs.main.replaceAll('/mnt/data/', ''), input: numbers.text, expect: `sum=${numbers.sum}` },
      ]
      for (const { program, code, input, expect } of cases) {
        const bare = bareCommand(lang, code)
        if (bare === null) continue
        const wardenMs: number[] = []
        const bareMs: number[] = []
        let errors = 0
        let firstError: string | null = null
        const hitsBefore = await preparedCounts(server.url)
        const cacheBefore = await compileCacheCounts(server.url)
        for (let run = 0; run < options.runs + 2; run++) {
          const record = (list: number[], ms: number) => { if (run >= 2) list.push(ms) }
          try {
            // a conversation's next call comes after the model read the last answer: the interpreter is started by then
            if (hasPrepared) await preparedReady(server.url, language.id)
            const started = performance.now()
            const user = program === 'hello-cached' ? 'bench-cached' : `bench-${lang}-${program}-${run}`
            const reply = await client.exec({ lang, code, user_id: user, ...(input === null ? {} : { files }) })
            const ms = performance.now() - started
            if (reply.status !== 'ok' || !reply.stdout.startsWith(expect)) throw new Error(`warden ${reply.status}: ${reply.stdout.slice(0, 100)} ${reply.stderr.slice(0, 300)}`)
            record(wardenMs, ms)
            const local = await runBare(bare, code, input, goCache)
            if (!local.stdout.startsWith(expect)) throw new Error(`bare printed ${local.stdout.slice(0, 100)}`)
            record(bareMs, local.ms)
          } catch (error) {
            errors++
            firstError ??= (error as Error).message
          }
        }
        const hitsAfter = await preparedCounts(server.url)
        const tried = hitsAfter.hits + hitsAfter.misses - hitsBefore.hits - hitsBefore.misses
        const preparedShare = tried === 0 ? null : (hitsAfter.hits - hitsBefore.hits) / tried
        const cacheAfter = await compileCacheCounts(server.url)
        const looked = cacheAfter === null || cacheBefore === null ? 0 : cacheAfter.hits + cacheAfter.misses - cacheBefore.hits - cacheBefore.misses
        // the two warm-up runs are counted too: the first of hello-cached is its one miss
        const cacheHitShare = looked === 0 || cacheAfter === null || cacheBefore === null ? null : (cacheAfter.hits - cacheBefore.hits) / looked
        const wardenP50 = percentile([...wardenMs].sort((a, b) => a - b), 0.5)
        const bareP50 = percentile([...bareMs].sort((a, b) => a - b), 0.5)
        const goal = program === 'hello-cached' ? 0.2 : kind === 'compiled' ? 1 : 0.5
        const row: LanguageRow = { lang, program, kind, runs: wardenMs.length, wardenP50, bareP50, ratio: wardenP50 / bareP50, goal, preparedShare, cacheHitShare, errors, firstError }
        options.log(`languages ${lang} ${program}: warden p50 ${wardenP50.toFixed(1)} ms, bare p50 ${bareP50.toFixed(1)} ms, ${row.ratio.toFixed(2)}x (goal ${row.goal}x), errors ${errors}${firstError === null ? '' : ` (${firstError})`}`)
        rows.push(row)
      }
    }
  } finally {
    await client.close()
    await server.stop()
    await rm(goCache, { recursive: true, force: true })
  }
  return rows
}

/** The prepared-worker counters of /health (warm-up runs included: compare before and after). */
async function preparedCounts (url: string): Promise<{ hits: number, misses: number }> {
  const health = await (await fetch(`${url}/v1/health`)).json() as { pool: { prepared_hits?: number, prepared_misses?: number } }
  return { hits: health.pool.prepared_hits ?? 0, misses: health.pool.prepared_misses ?? 0 }
}

/** The compile cache's lookups from /metrics; null for a server without one (an older commit). */
async function compileCacheCounts (url: string): Promise<{ hits: number, misses: number } | null> {
  const text = await (await fetch(`${url}/v1/metrics`)).text()
  const read = (result: string) => /^warden_compile_cache_lookups_total\{result="(?:hit|miss)"\} (\d+)/m.test(text)
    ? Number(new RegExp(`^warden_compile_cache_lookups_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
    : null
  const hits = read('hit')
  const misses = read('miss')
  return hits === null || misses === null ? null : { hits, misses }
}

function stepCount (program: Program): number {
  return program.runner === 'steps' ? program.steps.length : 1
}

/** The README's table: one line per language and program. */
export function renderLanguageTable (rows: LanguageRow[]): string {
  const lines = [
    '| lang | program | kind | Warden p50 ms | bare p50 ms | Warden / bare | goal | met | prepared | compile cache hits |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for (const row of rows) {
    const met = row.errors === 0 && row.ratio <= row.goal
    lines.push(`| \`${row.lang}\` | ${row.program} | ${row.kind} | ${row.wardenP50.toFixed(1)} | ${row.bareP50.toFixed(1)} | ${row.ratio.toFixed(2)}× | ≤ ${row.goal}× | ${met ? 'yes' : 'no'}${row.errors > 0 ? ` (${row.errors} errors)` : ''} | ${row.preparedShare === null ? '–' : `${Math.round(row.preparedShare * 100)}%`} | ${row.cacheHitShare === null ? '–' : `${Math.round(row.cacheHitShare * 100)}%`} |`)
  }
  return lines.join('\n')
}

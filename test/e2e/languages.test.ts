import assert from 'node:assert/strict'
import http from 'node:http'
import { before, describe, test } from 'node:test'
import { checkLanguages, LIBRECHAT_LANGUAGES, programFor, resolveLanguage } from '../../src/exec/languages/index.ts'
import { USER_ID, codeTool, downloadAsLibreChat, injectedFromUpload, invoke, uploadAsLibreChat, type CodeEnvFile, type ToolResult } from '../helpers/librechat.ts'
import { MAIN_ARGS, MAIN_INPUT, MAIN_SORTED, MAIN_STDOUT, PROGRAMS, type LanguagePrograms } from '../helpers/programs.ts'
import { api, availableDrivers, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * Every language LibreChat's `execute_code` offers (spec §3.1.1), through the real agents SDK, on every
 * installed jail driver: a program that computes, takes args, reads an input from /mnt/data and writes an
 * output that downloads; a compile error; a runtime error; the time limit; a memory bomb; no network and
 * a fork bomb. Twice per driver: every language as processes the worker starts (PREPARED_MAX=0), and
 * the languages with a prepared interpreter (Node, TypeScript, Java, R, PHP) in workers that started it ahead,
 * each run waiting until one is ready. The runs start together in `before` (the CPU-bound ones a few at
 * a time, the sleeping ones all at once) and each test awaits its own, so a suite takes about as long as
 * its slowest language rather than the sum of all.
 */

// axios (the upload) leaves a keep-alive socket in Node 20's global agent, which destroys it 5 s later
// even when node-fetch (the SDK) has taken it for a long /exec meanwhile: "socket hang up". In LibreChat
// the model's call comes long after an upload; here it comes at once, and runs take up to 20 s.
http.globalAgent = new http.Agent({ keepAlive: false })

const EXEC_TIMEOUT_MS = 20_000
const PIDS_LIMIT = 128
const MEMORY_LIMIT_MB = 512
const TIME_LIMIT_SENTENCE = 'Execution exceeded the time limit of 20 s and was stopped.'
const MEMORY_LIMIT_SENTENCE = `Execution exceeded the memory limit of ${MEMORY_LIMIT_MB} MiB and was stopped.`
const COMPILE_FAILED = /\nCompilation failed \(exit code \d+\); the program did not run\.$/
/** CPU-bound runs at once: two cores, and room for the other suites' servers */
const CPU_BOUND_AT_ONCE = 3
const SUITE_TEST_TIMEOUT_MS = 300_000

type RunKind = 'main' | 'compileError' | 'runtimeError' | 'sleep' | 'memoryBomb' | 'networkAndForkBomb'

interface Observed {
  result: ToolResult
  /** the outcome /exec reported, from the server's `request completed` log line */
  outcome: string
  /** whether it ran in a prepared worker, from the same line */
  prepared: boolean
  stdout: string
  stderr: string
}

/** The sections of the tool's content (`stdout:\n…` then `stderr:\n…`, spec §3.1.3). */
function sections (content: string): { stdout: string, stderr: string } {
  const body = content.split('\n\nGenerated files:')[0] ?? ''
  const stderrAt = body.indexOf('stderr:\n')
  const stdoutPart = stderrAt >= 0 ? body.slice(0, stderrAt) : body
  return {
    stdout: stdoutPart.startsWith('stdout:\n') ? stdoutPart.slice('stdout:\n'.length).trimEnd() : '',
    stderr: stderrAt >= 0 ? body.slice(stderrAt + 'stderr:\n'.length).trimEnd() : '',
  }
}

/**
 * The outcome /exec reported for an execution (the tool shows the model only stdout and stderr), from the
 * server's log line for the request that ran it (`request completed`, which names the execution): the line may reach the pipe a moment after the answer.
 */
async function outcomeOf (server: RunningServer, executionId: string): Promise<{ outcome: string, prepared: boolean }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const line = server.logs().split('\n').find((candidate) => candidate.includes(executionId) && candidate.includes('"request completed"'))
    if (line !== undefined) return JSON.parse(line) as { outcome: string, prepared: boolean }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`no "request completed" line for ${executionId}`)
}

/** At most `size` tasks at once, in the order they were queued. */
function limiter (size: number) {
  let running = 0
  const waiting: Array<() => void> = []
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= size) await new Promise<void>((resolve) => waiting.push(resolve))
    running++
    try {
      return await task()
    } finally {
      running--
      waiting.shift()?.()
    }
  }
}

function suiteTest (name: string, fn: () => Promise<void>): void {
  test(name, { timeout: SUITE_TEST_TIMEOUT_MS }, fn)
}

const sorted = (list: Iterable<string>) => [...list].sort()
const INSTALLED = checkLanguages().available
const isInstalled = (lang: string) => INSTALLED.some((language) => language === resolveLanguage(lang))
const hasPreparedInterpreter = (lang: string) => {
  const language = resolveLanguage(lang)
  const program = language === null ? null : programFor(language, { code: '', limits: { memoryBytes: MEMORY_LIMIT_MB * 2 ** 20, cpus: 1, compileTimeoutMs: 15_000 } })
  return program?.runner === 'steps' && program.prepare !== undefined
}

/** Until the server has a prepared worker for `id` (from /health); the first run of a language starts one. */
async function preparedWorkerReady (server: RunningServer, id: string): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const health = await (await api(server, '/health')).json() as { pool: { prepared: Record<string, number> } }
    if ((health.pool.prepared[id] ?? 0) > 0) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`no prepared worker for ${id} within 30 s`)
}

const MODES = [
  { prepared: false, title: 'every LibreChat language through the agents SDK', langs: LIBRECHAT_LANGUAGES.filter(isInstalled) },
  { prepared: true, title: 'Node, TypeScript, Java, R and PHP in prepared workers through the agents SDK', langs: LIBRECHAT_LANGUAGES.filter((lang) => isInstalled(lang) && hasPreparedInterpreter(lang)) },
]

for (const driver of availableDrivers()) {
  for (const mode of MODES) {
    describe(`${mode.title} on ${driver}`, () => {
      let server: RunningServer
      const t = suiteContext()
      const runs = new Map<string, Promise<Observed>>()
      const observeRun = (lang: string, kind: RunKind): Promise<Observed> => {
        const observed = runs.get(`${lang}/${kind}`)
        assert.ok(observed !== undefined, `${lang} has no ${kind} program`)
        return observed
      }

      before(async () => {
        server = await startServer(t, {
          driver,
          env: {
            EXEC_TIMEOUT_MS: String(EXEC_TIMEOUT_MS),
            MEMORY_LIMIT_MB: String(MEMORY_LIMIT_MB),
            PIDS_LIMIT: String(PIDS_LIMIT),
            POOL_MIN: '4',
            POOL_MAX: '20',
            MAX_CONCURRENT_PER_USER: '0',
            PREPARED_MAX: mode.prepared ? String(2 * mode.langs.length) : '0',
          },
        })
        const input = await uploadAsLibreChat(server, { kind: 'user', id: USER_ID, filename: 'numbers.txt', bytes: MAIN_INPUT, contentType: 'text/plain', userId: USER_ID })
        const cpuBound = limiter(CPU_BOUND_AT_ONCE)
        const invokeAndObserve = async (lang: string, code: string, files: CodeEnvFile[], args?: string[]): Promise<Observed> => {
          const result = await invoke(codeTool(server), { lang, code, ...(args === undefined ? {} : { args }) }, files.length > 0 ? { _injected_files: files } : {})
          return { result, ...await outcomeOf(server, result.artifact.session_id), ...sections(result.content) }
        }
        const kindsOf = (lang: string): Array<[RunKind, string, CodeEnvFile[], string[]?]> => {
          const programs = PROGRAMS[lang] as LanguagePrograms
          return [
            ['sleep', programs.sleep, []],
            ['main', programs.main, [injectedFromUpload(input)], MAIN_ARGS],
            ...(programs.compileError === undefined ? [] : [['compileError', programs.compileError.code, []] as [RunKind, string, CodeEnvFile[]]]),
            ['runtimeError', programs.runtimeError, []],
            ['memoryBomb', programs.memoryBomb, []],
            ...(programs.networkAndForkBomb === undefined ? [] : [['networkAndForkBomb', programs.networkAndForkBomb, []] as [RunKind, string, CodeEnvFile[]]]),
          ]
        }
        for (const lang of mode.langs) {
          if (!mode.prepared) {
            for (const [kind, code, files, args] of kindsOf(lang)) {
              const observed = kind === 'sleep' ? invokeAndObserve(lang, code, files, args) : cpuBound(async () => await invokeAndObserve(lang, code, files, args))
              observed.catch(() => {}) // awaited by its test
              runs.set(`${lang}/${kind}`, observed)
            }
            continue
          }
          // one run at a time per language, each once a prepared worker is ready; the first, plain one starts it
          const id = resolveLanguage(lang)?.id as string
          let previous: Promise<unknown> = invokeAndObserve(lang, (PROGRAMS[lang] as LanguagePrograms).hello, [])
          const sleepLast = kindsOf(lang).sort(([a], [b]) => Number(a === 'sleep') - Number(b === 'sleep'))
          for (const [kind, code, files, args] of sleepLast) {
            const observed = previous.catch(() => {}).then(async () => {
              await preparedWorkerReady(server, id)
              return await invokeAndObserve(lang, code, files, args)
            })
            observed.catch(() => {})
            runs.set(`${lang}/${kind}`, observed)
            previous = observed
          }
        }
      })

      suiteTest('/health lists as available exactly the languages whose runtimes this machine has', async () => {
        const health = await (await api(server, '/health')).json() as { languages: { available: Array<{ id: string }>, missing: Array<{ id: string }> } }
        const installed = checkLanguages()
        assert.deepEqual(sorted(health.languages.available.map((language) => language.id)), sorted(installed.available.map((language) => language.id)))
        assert.deepEqual(sorted(health.languages.missing.map((language) => language.id)), sorted(installed.missing.map(({ language }) => language.id)))
        // CI installs every runtime (.ci/run): there, all 13 must run
        if (process.env.CI === 'true') assert.deepEqual(installed.missing.map(({ language }) => language.id), [])
      })

      for (const lang of mode.prepared ? mode.langs : LIBRECHAT_LANGUAGES) {
        const programs = PROGRAMS[lang] as LanguagePrograms
        const skip = isInstalled(lang) ? false : `${lang}: runtime not installed (see /health)`
        const observe = async (kind: RunKind): Promise<Observed> => {
          const observed = await observeRun(lang, kind)
          assert.equal(observed.prepared, mode.prepared, `${lang} ${kind} ran ${observed.prepared ? 'in' : 'without'} a prepared interpreter`)
          return observed
        }
        describe(`${lang} (${resolveLanguage(lang)?.id ?? 'unknown'})`, { skip }, () => {
          suiteTest('computes, gets its args as argv, reads /mnt/data/numbers.txt and writes sorted.txt, which downloads', async () => {
            const { result, outcome, stdout, stderr } = await observe('main')
            assert.equal(outcome, 'ok', result.content)
            assert.equal(stdout, MAIN_STDOUT.trimEnd(), result.content)
            assert.equal(stderr, '', result.content)
            const output = (result.artifact.files ?? []).filter((file) => file.name === 'sorted.txt' && file.inherited !== true)
            assert.equal(output.length, 1, JSON.stringify(result.artifact))
            const file = output[0] as NonNullable<typeof output[0]>
            const downloaded = await downloadAsLibreChat(server, file.storage_session_id ?? result.artifact.session_id, file.id)
            assert.equal(downloaded.status, 200)
            assert.equal(downloaded.bytes.toString(), MAIN_SORTED)
          })

          if (programs.compileError !== undefined) {
            const { compileMessage } = programs.compileError
            suiteTest('a compile error comes back as the compiler\'s message in stderr, status compile_error, and nothing runs', async () => {
              const { result, outcome, stdout, stderr } = await observe('compileError')
              assert.equal(outcome, 'compile_error', result.content)
              assert.equal(stdout, '', result.content)
              assert.match(stderr, compileMessage)
              assert.match(stderr, COMPILE_FAILED)
            })
          }

          suiteTest('a runtime error keeps the earlier stdout and shows the error in stderr', async () => {
            const { result, outcome, stdout, stderr } = await observe('runtimeError')
            // an uncaught C++ exception aborts (SIGABRT): the status says killed, the message is still there
            assert.ok(['error', 'killed'].includes(outcome), `${outcome}: ${result.content}`)
            assert.equal(stdout, 'before')
            assert.match(stderr, /boom 42/)
          })

          suiteTest(`a program that sleeps is stopped at EXEC_TIMEOUT_MS=${EXEC_TIMEOUT_MS}, keeping what it printed`, async () => {
            const { result, outcome, stdout, stderr } = await observe('sleep')
            assert.equal(outcome, 'timeout', result.content)
            assert.equal(stdout, 'started')
            assert.ok(stderr.includes(TIME_LIMIT_SENTENCE), result.content)
          })

          suiteTest(`a memory bomb is stopped at MEMORY_LIMIT_MB=${MEMORY_LIMIT_MB}`, async () => {
            const { result, outcome, stderr } = await observe('memoryBomb')
            if (lang === 'java') {
            // the JVM's heap is sized to the limit (src/exec/languages/java.ts): Java reports the bomb itself
              assert.equal(outcome, 'error', result.content)
              assert.match(stderr, /java\.lang\.OutOfMemoryError: Java heap space/)
            } else {
              assert.equal(outcome, 'oom', result.content)
              assert.ok(stderr.includes(MEMORY_LIMIT_SENTENCE), result.content)
            }
          })

          if (programs.networkAndForkBomb !== undefined) {
            suiteTest(`has no network, and a fork bomb is refused below PIDS_LIMIT=${PIDS_LIMIT}`, async () => {
              const { result, outcome, stdout } = await observe('networkAndForkBomb')
              assert.equal(outcome, 'ok', result.content)
              assert.match(stdout, /^network: blocked/m)
              assert.doesNotMatch(stdout, /CONNECTED/)
              const refused = /^refused after (\d+)/m.exec(stdout)
              assert.ok(refused !== null, result.content)
              assert.ok(Number(refused[1]) > 0 && Number(refused[1]) < PIDS_LIMIT, result.content)
            })
          }
        })
      }
    })
  }
}

import path from 'node:path'
import { NODE, firstInstalled, type LanguageDescriptor } from './language.ts'

/** The `typescript` npm package, installed globally (`npm install -g typescript`) under /usr. */
const TSC = firstInstalled(['/usr/local/lib/node_modules/typescript/bin/tsc', '/usr/lib/node_modules/typescript/bin/tsc'])
const TYPESCRIPT = path.dirname(path.dirname(TSC))

/**
 * Turns main.ts into main.js next to it, types erased, as tsx, ts-node's transpile-only mode and Node's
 * own type stripping do: no type checking (a whole-program check costs 1–2 s per run). Syntax errors
 * are compile errors, printed as tsc prints them. CommonJS output, so `import` and `require` both work;
 * an inline source map makes Node report the .ts lines in stack traces.
 */
const TRANSPILE_FUNCTION = `function transpile (ts, file) {
  const fs = require('fs')
  const result = ts.transpileModule(fs.readFileSync(file, 'utf8'), {
    fileName: file,
    reportDiagnostics: true,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, inlineSourceMap: true, inlineSources: true },
  })
  if (result.diagnostics.length > 0) {
    const host = { getCanonicalFileName: (name) => name, getCurrentDirectory: () => require('path').dirname(file), getNewLine: () => '\\n' }
    process.stderr.write(ts.formatDiagnostics(result.diagnostics, host))
    return false
  }
  fs.writeFileSync(file.replace(/\\.ts$/, '.js'), result.outputText)
  return true
}`

const TRANSPILE = `${TRANSPILE_FUNCTION}
if (!transpile(require(${JSON.stringify(TYPESCRIPT)}), process.argv[1])) process.exit(1)
`

/**
 * Started ahead in a prepared worker (sandbox/prepared.py): Node with the TypeScript compiler loaded and
 * run once (its code compiled by V8), so a program's transpile takes milliseconds. Then as the two steps
 * below: a failed transpile before `S` (a compile error), the program after it, with the compiler let go.
 */
const PREPARE = `'use strict'
const fs = require('fs')
${TRANSPILE_FUNCTION}
let ts = require(${JSON.stringify(TYPESCRIPT)})
ts.transpileModule('const warm: number = 1; export default warm', { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, inlineSourceMap: true } })
const signal = fs.openSync('/tmp/.warden/signal', 'w')
fs.writeSync(signal, 'L')
const [source, script, ...args] = fs.readFileSync('/tmp/.warden/job', 'utf8').split('\\0').slice(0, -1)
if (!transpile(ts, source)) process.exit(1)
ts = null
for (const name of Object.keys(require.cache)) if (name.startsWith(${JSON.stringify(TYPESCRIPT + '/')})) delete require.cache[name]
process.argv = [process.argv[0], script, ...args]
fs.writeSync(signal, 'S')
fs.closeSync(signal)
require('module').runMain()
`

export default {
  id: 'typescript',
  aliases: ['ts', 'typescript'],
  program: {
    runner: 'steps',
    sourceFile: 'main.ts',
    steps: [
      { name: 'compile', argv: [NODE, '-e', TRANSPILE, '{source}'] },
      { name: 'run', argv: [NODE, '--enable-source-maps', '{dir}/main.js', '{args}'] },
    ],
    prepare: { key: 'typescript', argv: [NODE, '--enable-source-maps', '{dir}/prepare.js'], handoff: 'job', files: { 'prepare.js': PREPARE } },
  },
  requires: [NODE, TSC],
  install: 'nodejs, and the typescript npm package (npm install -g typescript)',
} satisfies LanguageDescriptor

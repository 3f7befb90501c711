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
const TRANSPILE = `
const ts = require(${JSON.stringify(TYPESCRIPT)})
const fs = require('fs')
const file = process.argv[1]
const result = ts.transpileModule(fs.readFileSync(file, 'utf8'), {
  fileName: file,
  reportDiagnostics: true,
  compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, inlineSourceMap: true, inlineSources: true },
})
if (result.diagnostics.length > 0) {
  process.stderr.write(ts.formatDiagnostics(result.diagnostics, { getCanonicalFileName: (name) => name, getCurrentDirectory: () => require('path').dirname(file), getNewLine: () => '\\n' }))
  process.exit(1)
}
fs.writeFileSync(file.replace(/\\.ts$/, '.js'), result.outputText)
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
  },
  requires: [NODE, TSC],
  install: 'nodejs, and the typescript npm package (npm install -g typescript)',
} satisfies LanguageDescriptor

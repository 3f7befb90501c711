import { NODE, type LanguageDescriptor } from './language.ts'

/**
 * Started ahead in a prepared worker (sandbox/prepared.py): Node is up before the program is known, then
 * runs it as `node main.js args` would, through Node's own entry point (Module.runMain: process.argv,
 * require.main, ES module detection). Nothing of this file is left in process.argv or execArgv.
 */
export const NODE_PREPARE = `'use strict'
const fs = require('fs')
const signal = fs.openSync('/tmp/.warden/signal', 'w')
fs.writeSync(signal, 'L')
const [, script, ...args] = fs.readFileSync('/tmp/.warden/job', 'utf8').split('\\0').slice(0, -1)
process.argv = [process.argv[0], script, ...args]
fs.writeSync(signal, 'S')
fs.closeSync(signal)
require('module').runMain()
`

/**
 * Node.js 20. A `.js` file with `import`/`export` or a top-level `await` runs as an ES module, anything
 * else as CommonJS (`require` works): Node 20.19+ detects the module syntax itself.
 */
export default {
  id: 'javascript',
  aliases: ['js', 'javascript', 'node', 'nodejs'],
  program: {
    runner: 'steps',
    sourceFile: 'main.js',
    steps: [{ name: 'run', argv: [NODE, '{source}', '{args}'] }],
    prepare: { key: 'javascript', argv: [NODE, '{dir}/prepare.js'], handoff: 'job', files: { 'prepare.js': NODE_PREPARE } },
  },
  requires: [NODE],
  install: 'nodejs',
} satisfies LanguageDescriptor

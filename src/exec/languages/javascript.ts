import { NODE, type LanguageDescriptor } from './language.ts'

/**
 * Node.js 20. A `.js` file with `import`/`export` or a top-level `await` runs as an ES module, anything
 * else as CommonJS (`require` works): Node 20.19+ detects the module syntax itself.
 */
export default {
  id: 'javascript',
  aliases: ['js', 'javascript', 'node', 'nodejs'],
  program: { runner: 'steps', sourceFile: 'main.js', steps: [{ name: 'run', argv: [NODE, '{source}', '{args}'] }] },
  requires: [NODE],
  install: 'nodejs',
} satisfies LanguageDescriptor

import type { LanguageDescriptor } from './language.ts'

/**
 * GDC, the GCC front end for D, with its Phobos standard library. Not optimised: -O2 triples the compile
 * of Phobos-heavy code (a 9-line range pipeline: 1.1 s -> 3.0 s of CPU), which a snippet never wins back.
 */
export default {
  id: 'd',
  aliases: ['d', 'dlang', 'gdc'],
  program: {
    runner: 'steps',
    sourceFile: 'main.d',
    artifacts: ['main'],
    steps: [
      { name: 'compile', argv: ['/usr/bin/gdc', '-pipe', '-o', '{dir}/main', '{source}'] },
      { name: 'run', argv: ['{dir}/main', '{args}'] },
    ],
  },
  requires: ['/usr/bin/gdc'],
  install: 'gdc',
} satisfies LanguageDescriptor

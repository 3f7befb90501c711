import type { LanguageDescriptor } from './language.ts'

/** GCC's default dialect (gnu17); `-lm` because model-written C calls sqrt() and pow() without it. */
export default {
  id: 'c',
  aliases: ['c', 'gcc'],
  program: {
    runner: 'steps',
    sourceFile: 'main.c',
    artifacts: ['main'],
    steps: [
      { name: 'compile', argv: ['/usr/bin/gcc', '-O2', '-pipe', '-o', '{dir}/main', '{source}', '-lm'] },
      { name: 'run', argv: ['{dir}/main', '{args}'] },
    ],
  },
  requires: ['/usr/bin/gcc'],
  install: 'gcc',
} satisfies LanguageDescriptor

import type { LanguageDescriptor } from './language.ts'

/** G++'s default dialect (gnu++17 in GCC 12). */
export default {
  id: 'cpp',
  aliases: ['cpp', 'c++', 'cxx', 'g++'],
  program: {
    runner: 'steps',
    sourceFile: 'main.cpp',
    artifacts: ['main'],
    steps: [
      { name: 'compile', argv: ['/usr/bin/g++', '-O2', '-pipe', '-o', '{dir}/main', '{source}'] },
      { name: 'run', argv: ['{dir}/main', '{args}'] },
    ],
  },
  requires: ['/usr/bin/g++'],
  install: 'g++',
} satisfies LanguageDescriptor

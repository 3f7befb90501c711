import type { LanguageDescriptor } from './language.ts'

/**
 * rustc on one file, edition 2021 (rustc's own default is 2015, which models do not write), without
 * optimisation: a snippet compiles 2-4x faster, and overflow checks stay on. rustc links with `cc`.
 */
export default {
  id: 'rust',
  aliases: ['rs', 'rust', 'rustc'],
  program: {
    runner: 'steps',
    sourceFile: 'main.rs',
    steps: [
      { name: 'compile', argv: ['/usr/bin/rustc', '--edition', '2021', '-o', '{dir}/main', '{source}'] },
      { name: 'run', argv: ['{dir}/main', '{args}'] },
    ],
  },
  requires: ['/usr/bin/rustc', '/usr/bin/cc'],
  install: 'rustc',
} satisfies LanguageDescriptor

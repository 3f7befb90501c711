import type { LanguageDescriptor } from './language.ts'

/**
 * rustc on one file, edition 2021 (rustc's own default is 2015, which models do not write), without
 * optimisation: a snippet compiles 2-4x faster, and overflow checks stay on. rustc links with `cc`.
 * `prefer-dynamic` links the standard library Debian ships as a shared object (libstd-rust) instead of
 * copying it into every binary: hello world compiles in 0.1 s instead of 0.4 s, and is 18 KB, not 11 MB
 * of the run's /tmp.
 */
export default {
  id: 'rust',
  aliases: ['rs', 'rust', 'rustc'],
  program: {
    runner: 'steps',
    sourceFile: 'main.rs',
    artifacts: ['main'],
    steps: [
      { name: 'compile', argv: ['/usr/bin/rustc', '--edition', '2021', '-C', 'prefer-dynamic', '-o', '{dir}/main', '{source}'] },
      { name: 'run', argv: ['{dir}/main', '{args}'] },
    ],
  },
  requires: ['/usr/bin/rustc', '/usr/bin/cc'],
  install: 'rustc',
} satisfies LanguageDescriptor

import type { LanguageDescriptor } from './language.ts'

/** Rscript; `commandArgs(trailingOnly = TRUE)` gives the args. */
export default {
  id: 'r',
  aliases: ['r', 'rscript'],
  program: { runner: 'steps', sourceFile: 'main.R', steps: [{ name: 'run', argv: ['/usr/bin/Rscript', '{source}', '{args}'] }] },
  requires: ['/usr/bin/Rscript'],
  install: 'r-base-core',
} satisfies LanguageDescriptor

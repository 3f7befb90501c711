import type { LanguageDescriptor } from './language.ts'

/**
 * In a prepared worker (sandbox/prepared.py) Rscript is started ahead on main.R as a FIFO: R loads its
 * base packages, runs the warm-up line (`L`), then reads the program from the FIFO as it would from the
 * file, so errors and printing are Rscript's own. The prefix gives it the args it was started without:
 * `commandArgs()` answers as for `Rscript main.R args`.
 */
/** Writes `letter` to the worker's signal FIFO (a raw connection: R warns about a FIFO opened as a file). */
const signal = (letter: string) => `local({ signal <- file("/tmp/.warden/signal", "w", raw = TRUE); cat("${letter}", file = signal); close(signal) })`

const PREFIX = 'local({ args <- as.character(c({args_items})); full <- c(commandArgs(), if (length(args) > 0) c("--args", args)); ' +
  'unlockBinding("commandArgs", baseenv()); assign("commandArgs", function(trailingOnly = FALSE) if (trailingOnly) args else full, envir = baseenv()); ' +
  'lockBinding("commandArgs", baseenv()) }); ' + signal('S') + '\n'

/** Rscript; `commandArgs(trailingOnly = TRUE)` gives the args. */
export default {
  id: 'r',
  aliases: ['r', 'rscript'],
  program: {
    runner: 'steps',
    sourceFile: 'main.R',
    steps: [{ name: 'run', argv: ['/usr/bin/Rscript', '{source}', '{args}'] }],
    prepare: { key: 'r', argv: ['/usr/bin/Rscript', '{source}'], handoff: 'source', sourceFile: 'main.R', warmup: signal('L') + '\n', prefix: PREFIX },
  },
  requires: ['/usr/bin/Rscript'],
  install: 'r-base-core',
} satisfies LanguageDescriptor

import type { LanguageDescriptor } from './language.ts'

/** Runs in the worker's own interpreter, which the zygote warmed with the data stack: no process start. */
export default {
  id: 'python',
  aliases: ['py', 'python', 'python3'],
  program: { runner: 'python' },
  // the zygote itself is Python (PYTHON_PATH): a server without it does not start at all
  requires: [],
  install: 'python3',
} satisfies LanguageDescriptor

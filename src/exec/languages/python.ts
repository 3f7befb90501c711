import type { LanguageDescriptor } from './language.ts'

/** Runs in the worker's own interpreter, which the zygote warmed with the data stack: no process start. */
export const python: LanguageDescriptor = {
  id: 'python',
  aliases: ['py', 'python', 'python3'],
  program: { runner: 'python' },
}

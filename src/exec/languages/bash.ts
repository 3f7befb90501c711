import type { LanguageDescriptor } from './language.ts'

/** A script file rather than `bash -c`: one argv string holds at most 128 KiB (MAX_ARG_STRLEN). */
export default {
  id: 'bash',
  aliases: ['bash', 'sh'],
  program: { runner: 'steps', sourceFile: 'main.sh', steps: [{ name: 'run', argv: ['/bin/bash', '{source}', '{args}'] }] },
  requires: ['/usr/bin/bash'],
  install: 'bash',
} satisfies LanguageDescriptor

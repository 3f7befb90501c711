import type { Program } from '../../pool/run.ts'

/**
 * One language Warden runs: the `lang` values that name it on the wire, how a worker runs its code, and
 * what the host must have installed. Adding a language is one such file in this folder (exporting the
 * descriptor as default), plus its runtime in the Dockerfile; index.ts finds it.
 */
export interface LanguageDescriptor {
  /** Warden's own name: logs, metrics, /health */
  id: string
  /** `lang` values that select it, lower case (matching ignores case and surrounding space) */
  aliases: readonly string[]
  program: Program
  /** executables the language needs inside the jail (the jail sees the host's /usr) */
  requires: readonly string[]
  /** what provides them, for the message when they are missing (a Debian package) */
  install: string
}

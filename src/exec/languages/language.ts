import type { Program } from '../../pool/run.ts'

/**
 * One language Warden runs: the `lang` values that name it on the wire and how a worker runs its code.
 * Adding a language is one such file (plus its runtime in the Dockerfile).
 */
export interface LanguageDescriptor {
  /** Warden's own name: logs, metrics, /health */
  id: string
  /** `lang` values that select it, lower case (matching ignores case and surrounding space) */
  aliases: readonly string[]
  program: Program
}

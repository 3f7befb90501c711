import type { RuntimeLanguage } from '../pool/worker.ts'

/** Every `lang` LibreChat's execute_code tool may send (spec §3.1.1). */
export const LIBRECHAT_LANGUAGES = ['py', 'js', 'ts', 'c', 'cpp', 'java', 'php', 'rs', 'go', 'd', 'f90', 'r', 'bash'] as const

const ALIASES = new Map<string, RuntimeLanguage>([
  ['py', 'python'],
  ['python', 'python'],
  ['python3', 'python'],
  ['bash', 'bash'],
  ['sh', 'bash'],
])

/** The `lang` values Warden runs, for error messages and the README. */
export const SUPPORTED_LANGUAGES = [...ALIASES.keys()]

/** Map a wire `lang` to the language a worker runs, or null when Warden does not run it. */
export function resolveLanguage (lang: string): RuntimeLanguage | null {
  return ALIASES.get(lang.trim().toLowerCase()) ?? null
}

import { bash } from './bash.ts'
import type { LanguageDescriptor } from './language.ts'
import { python } from './python.ts'

export type { LanguageDescriptor } from './language.ts'

/** Every `lang` LibreChat's execute_code tool may send (spec §3.1.1). */
export const LIBRECHAT_LANGUAGES = ['py', 'js', 'ts', 'c', 'cpp', 'java', 'php', 'rs', 'go', 'd', 'f90', 'r', 'bash'] as const

export const LANGUAGES: readonly LanguageDescriptor[] = [python, bash]

const BY_ALIAS = new Map(LANGUAGES.flatMap((language) => language.aliases.map((alias) => [alias, language] as const)))

/** The `lang` values Warden runs, for error messages and the README. */
export const SUPPORTED_LANGUAGES = [...BY_ALIAS.keys()]

/** The language a wire `lang` names, or null when Warden does not run it. */
export function resolveLanguage (lang: string): LanguageDescriptor | null {
  return BY_ALIAS.get(lang.trim().toLowerCase()) ?? null
}

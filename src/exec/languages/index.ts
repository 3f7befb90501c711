import { accessSync, constants, readdirSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Program } from '../../pool/run.ts'
import type { LanguageDescriptor, ProgramRequest } from './language.ts'

export type { LanguageDescriptor, ProgramRequest } from './language.ts'

/** Every `lang` LibreChat's execute_code tool may send (spec §3.1.1). */
export const LIBRECHAT_LANGUAGES = ['py', 'js', 'ts', 'c', 'cpp', 'java', 'php', 'rs', 'go', 'd', 'f90', 'r', 'bash'] as const

/** Every descriptor in this folder: a new language is one new file here, nothing else to edit. */
const descriptorFiles = readdirSync(import.meta.dirname)
  .filter((name) => name.endsWith('.ts') && name !== 'index.ts' && name !== 'language.ts')
  .sort()
export const LANGUAGES: readonly LanguageDescriptor[] = await Promise.all(descriptorFiles.map(async (name) =>
  (await import(pathToFileURL(path.join(import.meta.dirname, name)).href) as { default: LanguageDescriptor }).default))

const BY_ALIAS = new Map(LANGUAGES.flatMap((language) => language.aliases.map((alias) => [alias, language] as const)))

/** The `lang` values Warden knows, for error messages and the README. */
export const SUPPORTED_LANGUAGES = [...BY_ALIAS.keys()]

/** The language a wire `lang` names, or null when Warden has no such language. */
export function resolveLanguage (lang: string): LanguageDescriptor | null {
  return BY_ALIAS.get(lang.trim().toLowerCase()) ?? null
}

/**
 * The program a worker runs for one execution of `language`. Every step before the last builds the
 * program and gets the compile time limit unless it names its own; the last step runs within what is left
 * of the execution's own limit (the server's timer ends everything at EXEC_TIMEOUT_MS).
 */
export function programFor (language: LanguageDescriptor, request: ProgramRequest): Program {
  const program = typeof language.program === 'function' ? language.program(request) : language.program
  if (program.runner !== 'steps') return program
  const last = program.steps.length - 1
  return {
    ...program,
    steps: program.steps.map((step, index) => index < last ? { ...step, timeoutMs: step.timeoutMs ?? request.limits.compileTimeoutMs } : step),
  }
}

export interface LanguageAvailability {
  available: LanguageDescriptor[]
  /** languages whose runtime this host lacks, with the executables missing */
  missing: Array<{ language: LanguageDescriptor, executables: string[] }>
}

/** Which languages this host can run: each one's executables must exist and be executable. */
export function checkLanguages (languages: readonly LanguageDescriptor[] = LANGUAGES): LanguageAvailability {
  const result: LanguageAvailability = { available: [], missing: [] }
  for (const language of languages) {
    const executables = language.requires.filter((file) => {
      try {
        accessSync(file, constants.X_OK)
        return false
      } catch {
        return true
      }
    })
    if (executables.length === 0) result.available.push(language)
    else result.missing.push({ language, executables })
  }
  return result
}

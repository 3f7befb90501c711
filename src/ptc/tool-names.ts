import type { ToolStub } from '../pool/run.ts'

/** The languages a tool-calling program may be written in, and how each names its tool stubs. */
export type ProgrammaticLanguage = 'python' | 'bash'

/** Python's keywords: a tool named like one gets `_tool` appended (the SDK's rule, spec §3.2). */
const PYTHON_KEYWORDS = new Set([
  'False', 'None', 'True', 'and', 'as', 'assert', 'async', 'await', 'break', 'class', 'continue', 'def', 'del',
  'elif', 'else', 'except', 'finally', 'for', 'from', 'global', 'if', 'import', 'in', 'is', 'lambda', 'nonlocal',
  'not', 'or', 'pass', 'raise', 'return', 'try', 'while', 'with', 'yield',
])

/** Bash reserved words and declaration builtins, as the SDK lists them (BashProgrammaticToolCalling.ts:56-80). */
const BASH_RESERVED = new Set([
  'if', 'then', 'else', 'elif', 'fi', 'case', 'esac', 'for', 'while', 'until', 'do', 'done', 'in', 'function',
  'select', 'time', 'coproc', 'declare', 'typeset', 'local', 'readonly', 'export', 'unset',
])

const RULES: Record<ProgrammaticLanguage, { separators: RegExp, reserved: Set<string> }> = {
  python: { separators: /[-\s]/g, reserved: PYTHON_KEYWORDS },
  bash: { separators: /[-\s.]/g, reserved: BASH_RESERVED },
}

/**
 * The name of a tool's stub in the code, exactly as LibreChat's client derives it (the model is told these
 * names, and the client checks the code against them): separators become `_`, other characters outside
 * `[A-Za-z0-9_]` are dropped, a leading digit gets a `_` before it, a reserved word `_tool` after it.
 */
export function toolIdentifier (name: string, language: ProgrammaticLanguage): string {
  const rules = RULES[language]
  let identifier = name.replace(rules.separators, '_').replace(/[^A-Za-z0-9_]/g, '')
  if (/^[0-9]/.test(identifier)) identifier = `_${identifier}`
  if (rules.reserved.has(identifier)) identifier = `${identifier}_tool`
  return identifier
}

export type ToolPlan = { ok: true, stubs: ToolStub[] } | { ok: false, message: string }

/** Descriptions become docstrings; a long one is cut (the model reads the full one in its own prompt). */
const MAX_DESCRIPTION_CHARS = 2000

/**
 * The stubs for a request's tools, or why there can be none: a name that leaves no identifier, or two
 * tools whose names become the same identifier (the code could not say which one it means). A tool
 * listed twice under the same name is one tool.
 */
export function planToolStubs (tools: ReadonlyArray<{ name: string, description?: string }>, language: ProgrammaticLanguage): ToolPlan {
  const byIdentifier = new Map<string, ToolStub>()
  for (const tool of tools) {
    const identifier = toolIdentifier(tool.name, language)
    if (identifier === '') return { ok: false, message: `The tool name "${tool.name}" has no characters a ${language} identifier can use.` }
    const prior = byIdentifier.get(identifier)
    if (prior !== undefined && prior.name !== tool.name) {
      return { ok: false, message: `The tools "${prior.name}" and "${tool.name}" both become "${identifier}" in ${language}, so the code could not tell them apart; rename one.` }
    }
    if (prior === undefined) {
      byIdentifier.set(identifier, {
        name: tool.name,
        identifier,
        ...(typeof tool.description === 'string' && tool.description !== '' ? { description: tool.description.slice(0, MAX_DESCRIPTION_CHARS) } : {}),
      })
    }
  }
  return { ok: true, stubs: [...byIdentifier.values()] }
}

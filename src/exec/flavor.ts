import { execFileSync } from 'node:child_process'
import type { Program } from '../pool/run.ts'
import type { Flavor } from '../pool/worker-pool.ts'

/** Which kind of worker runs a program: see `Flavor` (src/pool/worker-pool.ts). */
export type FlavorOf = (program: Program, code: string) => Flavor

// `import a.b as c, d` and `from a.b import c`, anywhere in the code (inside functions and `try` too)
const IMPORT = /(?:^|[\n;])[ \t]*(?:import[ \t]+([^\n;#]+)|from[ \t]+([A-Za-z_][\w.]*)[ \t]+import\b)/g
// imports the statements above do not show
const DYNAMIC_IMPORT = /__import__|import_module|importlib/

/** The top-level modules the code's import statements name. */
export function importedModules (code: string): string[] {
  const modules: string[] = []
  for (const match of code.matchAll(IMPORT)) {
    const names = match[1] !== undefined ? match[1].split(',').map((part) => part.trim().split(/\s+/)[0] ?? '') : [match[2] ?? '']
    for (const name of names) {
      const top = name.replace(/[()\\]/g, '').split('.')[0]
      if (top !== undefined && top !== '') modules.push(top)
    }
  }
  return modules
}

/**
 * Programs run as processes of their own (Bash, compiled languages) never use the preloaded data stack:
 * light. Python is light when every module it imports is in the standard library; anything else (numpy,
 * an unknown module, a dynamic import, a Jupyter cell) gets the data zygote. A wrong guess costs only
 * time: a light worker imports pandas itself when asked.
 */
export function chooseFlavor (program: Program, code: string, stdlib: ReadonlySet<string>): Flavor {
  if (program.runner === 'steps' || program.runner === 'terminal') return 'light'
  if (program.cell !== undefined || stdlib.size === 0 || DYNAMIC_IMPORT.test(code)) return 'data'
  return importedModules(code).every((name) => stdlib.has(name)) ? 'light' : 'data'
}

/** The standard library's module names, as the jail's interpreter knows them; empty if it cannot say. */
export function loadStdlibModules (pythonPath: string): Set<string> {
  try {
    const output = execFileSync(pythonPath, ['-I', '-S', '-c', 'import sys; print("\\n".join(sorted(sys.stdlib_module_names)))'], { encoding: 'utf8', timeout: 10_000 })
    return new Set(output.split('\n').filter(Boolean))
  } catch {
    return new Set()
  }
}

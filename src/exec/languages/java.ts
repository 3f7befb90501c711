import { jvmLimits, type LanguageDescriptor } from './language.ts'

const IDENTIFIER = '[A-Za-z_$][\\w$]*'
const TYPE_DECLARATION = new RegExp(`\\b(?:class|interface|enum|record)\\s+(${IDENTIFIER})`, 'g')
const PACKAGE = new RegExp(`^\\s*package\\s+(${IDENTIFIER}(?:\\s*\\.\\s*${IDENTIFIER})*)\\s*;`, 'm')
const MAIN_METHOD = /\bstatic\s+(?:final\s+)?void\s+main\s*\(/

/** Where a Java program lives and which class starts it. */
export interface JavaEntry {
  /** `<the public top-level type>.java` (javac demands that name), else `Main.java` */
  sourceFile: string
  /** the top-level type declaring `static void main(`, else the public one, else the first; with its package */
  mainClass: string
}

/** Reads the names javac and java need from the code itself (comments and literals do not count). */
export function findJavaEntry (code: string): JavaEntry {
  const text = blankCommentsAndLiterals(code)
  const depths = braceDepths(text)
  const topLevel = [...text.matchAll(TYPE_DECLARATION)]
    .filter((match) => depths[match.index] === 0)
    .map((match) => ({ name: match[1] as string, index: match.index, isPublic: /\bpublic\b[^;{}]*$/.test(text.slice(0, match.index)) }))
  const publicType = topLevel.find((type) => type.isPublic)
  const main = MAIN_METHOD.exec(text)
  const withMain = main === null ? undefined : topLevel.filter((type) => type.index < main.index).at(-1)
  const name = (withMain ?? publicType ?? topLevel[0])?.name ?? 'Main'
  const pkg = PACKAGE.exec(text)?.[1]?.replace(/\s+/g, '')
  return { sourceFile: `${publicType?.name ?? 'Main'}.java`, mainClass: pkg === undefined ? name : `${pkg}.${name}` }
}

/** The code with every comment, string, text block and char literal replaced by spaces (same length). */
function blankCommentsAndLiterals (code: string): string {
  return code.replace(/\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)|"""[\s\S]*?(?:"""|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?/g,
    (literal) => literal.replace(/[^\n]/g, ' '))
}

/** The `{}` nesting depth before each character. */
function braceDepths (text: string): number[] {
  const depths: number[] = []
  let depth = 0
  for (const char of text) {
    depths.push(depth)
    if (char === '{') depth++
    else if (char === '}') depth = Math.max(0, depth - 1)
  }
  return depths
}

/**
 * javac, then java, each with the execution's memory and CPU (the JVM cannot see its cgroup): the heap
 * gets 60% of the memory limit, so a heap bomb ends in Java's own OutOfMemoryError, not a kill. javac
 * runs with the client compiler only (a third faster for a snippet); the program gets the full JIT.
 */
export default {
  id: 'java',
  aliases: ['java'],
  program: ({ code, limits }) => {
    const entry = findJavaEntry(code)
    // the JVM's own warnings (a thread it could not start) go to stderr, not into the program's stdout
    const jvm = [...jvmLimits(limits), '-XX:MaxRAMPercentage=60', '-XX:-UsePerfData', '-Xlog:disable', '-Xlog:all=warning:stderr']
    return {
      runner: 'steps',
      sourceFile: entry.sourceFile,
      steps: [
        {
          name: 'compile',
          argv: ['/usr/bin/javac', ...jvm.map((flag) => `-J${flag}`), '-J-XX:TieredStopAtLevel=1', '-encoding', 'UTF-8', '-d', '{dir}/classes', '{source}'],
        },
        { name: 'run', argv: ['/usr/bin/java', ...jvm, '-cp', '{dir}/classes', entry.mainClass, '{args}'] },
      ],
    }
  },
  requires: ['/usr/bin/javac', '/usr/bin/java'],
  install: 'default-jdk-headless',
} satisfies LanguageDescriptor

import assert from 'node:assert/strict'
import { accessSync, constants, existsSync, readdirSync, realpathSync } from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'
import { checkLanguages, LANGUAGES, LIBRECHAT_LANGUAGES, programFor, resolveLanguage, SUPPORTED_LANGUAGES, type LanguageDescriptor } from '../../../src/exec/languages/index.ts'
import { findJavaEntry } from '../../../src/exec/languages/java.ts'
import type { Program, ProgramStep } from '../../../src/pool/run.ts'

const MiB = 1024 * 1024
const LIMITS = { memoryBytes: 512 * MiB, cpus: 1, compileTimeoutMs: 15_000 }

function language (lang: string): LanguageDescriptor {
  const found = resolveLanguage(lang)
  assert.ok(found !== null, lang)
  return found
}

function steps (program: Program): ProgramStep[] {
  assert.equal(program.runner, 'steps')
  return program.runner === 'steps' ? program.steps : []
}

test('every lang LibreChat\'s execute_code may send resolves to a language', () => {
  assert.equal(LIBRECHAT_LANGUAGES.length, 13)
  const ids = LIBRECHAT_LANGUAGES.map((lang) => resolveLanguage(lang)?.id)
  assert.deepEqual(ids, ['python', 'javascript', 'typescript', 'c', 'cpp', 'java', 'php', 'rust', 'go', 'd', 'fortran', 'r', 'bash'])
})

test('the names models write resolve too, ignoring case and surrounding whitespace', () => {
  const cases: Array<[string, string]> = [
    ['python3', 'python'], ['JavaScript', 'javascript'], ['node', 'javascript'], ['NodeJS', 'javascript'],
    ['TypeScript', 'typescript'], ['C++', 'cpp'], ['cxx', 'cpp'], ['Rust', 'rust'], ['golang', 'go'], ['Go', 'go'],
    ['fortran', 'fortran'], ['F95', 'fortran'], ['R', 'r'], ['Rscript', 'r'], ['dlang', 'd'], ['PHP', 'php'],
    ['sh', 'bash'], [' Python3\n', 'python'], ['\tBash ', 'bash'], ['GCC', 'c'],
  ]
  for (const [lang, id] of cases) assert.equal(resolveLanguage(lang)?.id, id, JSON.stringify(lang))
})

test('resolveLanguage returns null for languages Warden does not run', () => {
  for (const lang of ['', ' ', 'python2', 'zsh', 'py thon', 'kotlin', 'ruby', 'c#', 'tsx']) {
    assert.equal(resolveLanguage(lang), null, JSON.stringify(lang))
  }
})

// The lookup table is a Map: Object.prototype's keys must not pass for languages.
test('resolveLanguage returns null for Object.prototype keys such as constructor and __proto__', () => {
  for (const lang of ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', '__defineGetter__']) {
    assert.equal(resolveLanguage(lang), null, lang)
  }
})

test('SUPPORTED_LANGUAGES lists exactly the lang values that resolve, lower case', () => {
  assert.deepEqual([...SUPPORTED_LANGUAGES].sort(), LANGUAGES.flatMap((descriptor) => descriptor.aliases).sort())
  for (const lang of SUPPORTED_LANGUAGES) {
    assert.equal(lang, lang.toLowerCase())
    assert.notEqual(resolveLanguage(lang), null, lang)
  }
})

test('every descriptor file in src/exec/languages is loaded: adding a language is one new file', () => {
  const dir = path.resolve(import.meta.dirname, '..', '..', '..', 'src', 'exec', 'languages')
  const files = readdirSync(dir).filter((name) => name.endsWith('.ts') && !['index.ts', 'language.ts'].includes(name))
  assert.equal(LANGUAGES.length, files.length)
  assert.deepEqual(LANGUAGES.map((descriptor) => `${descriptor.id}.ts`).sort(), files.sort(), 'each file is named for its language')
  const aliases = LANGUAGES.flatMap((descriptor) => descriptor.aliases)
  assert.equal(new Set(aliases).size, aliases.length, 'no alias names two languages')
  for (const descriptor of LANGUAGES) {
    for (const file of descriptor.requires) assert.ok(file.startsWith('/usr/'), `${descriptor.id}: ${file} is under /usr, which every jail binds`)
  }
})

test('checkLanguages finds a language available exactly when all its executables are, and names the missing ones', () => {
  const fake = { id: 'nothing', aliases: ['nothing'], program: { runner: 'python' as const }, requires: ['/usr/bin/no-such-runtime'], install: 'no-such-package' }
  const result = checkLanguages([...LANGUAGES, fake])
  const executable = (file: string) => { try { accessSync(file, constants.X_OK); return true } catch { return false } }
  for (const descriptor of LANGUAGES) {
    const missing = descriptor.requires.filter((file) => !executable(file))
    const entry = result.missing.find((candidate) => candidate.language === descriptor)
    assert.deepEqual(entry?.executables ?? [], missing, descriptor.id)
    assert.equal(result.available.includes(descriptor), missing.length === 0, descriptor.id)
  }
  assert.deepEqual(result.missing.find((entry) => entry.language === fake)?.executables, ['/usr/bin/no-such-runtime'])
})

test('programFor gives every step before the last the compile limit, and leaves the last step to the execution\'s limit', () => {
  for (const descriptor of LANGUAGES) {
    const program = programFor(descriptor, { code: 'class Main {}', limits: LIMITS })
    if (program.runner !== 'steps') continue
    const last = program.steps.at(-1) as ProgramStep
    assert.equal(last.timeoutMs, undefined, `${descriptor.id}: the program itself runs until EXEC_TIMEOUT_MS`)
    for (const step of program.steps.slice(0, -1)) assert.equal(step.timeoutMs, 15_000, `${descriptor.id}: ${step.name}`)
  }
  const own = { id: 'own', aliases: ['own'], requires: [], install: '', program: { runner: 'steps' as const, sourceFile: 'x', steps: [{ name: 'compile', argv: ['cc'], timeoutMs: 500 }, { name: 'run', argv: ['x'] }] } }
  assert.equal(steps(programFor(own, { code: '', limits: LIMITS }))[0]?.timeoutMs, 500, 'a step\'s own limit stands')
})

test('compiled languages compile then run the binary with the user\'s args; interpreters run the source with them', () => {
  for (const lang of ['c', 'cpp', 'rs', 'go', 'd', 'f90']) {
    const program = programFor(language(lang), { code: '', limits: LIMITS })
    const names = steps(program).map((step) => step.name)
    assert.equal(names[0], 'compile', lang)
    assert.equal(names.at(-1), 'run', lang)
    assert.deepEqual(steps(program).at(-1)?.argv, ['{dir}/main', '{args}'], lang)
    assert.ok(steps(program)[0]?.argv.includes('{source}'), lang)
  }
  for (const lang of ['js', 'php', 'r', 'bash']) {
    const argv = steps(programFor(language(lang), { code: '', limits: LIMITS }))[0]?.argv ?? []
    assert.deepEqual(argv.slice(-2), ['{source}', '{args}'], lang)
  }
})

test('Go: one file is compiled and linked by the toolchain\'s own tools when the standard library comes compiled; cgo needs go build', { skip: !existsSync('/usr/bin/go') && 'Go is not installed' }, () => {
  const plain = steps(programFor(language('go'), { code: 'package main\nimport "fmt"\nfunc main() { fmt.Println(1) }', limits: LIMITS }))
  const prebuilt = existsSync(`${path.dirname(path.dirname(realpathSync('/usr/bin/go')))}/pkg/linux_amd64/fmt.a`)
  if (prebuilt) {
    assert.deepEqual(plain.map((step) => step.name), ['compile', 'link', 'run'])
    assert.match(plain[0]?.argv[0] ?? '', /\/pkg\/tool\/linux_\w+\/compile$/)
  } else {
    assert.deepEqual(plain.map((step) => step.name), ['compile', 'run'])
  }
  for (const cgo of ['package main\n\nimport "C"\n\nfunc main() {}', 'package main\n\nimport (\n\t"fmt"\n\t"C"\n)\n']) {
    const built = steps(programFor(language('go'), { code: cgo, limits: LIMITS }))
    assert.deepEqual(built[0]?.argv.slice(0, 2), ['/usr/bin/go', 'build'], cgo)
  }
})

test('the JVM and Go are told the execution\'s memory and CPU, which they cannot see from inside the jail', () => {
  const limits = { memoryBytes: 256 * MiB, cpus: 1.5, compileTimeoutMs: 15_000 }
  const java = steps(programFor(language('java'), { code: 'public class Main {}', limits }))
  for (const argv of java.map((step) => step.argv)) {
    const flags = argv.map((arg) => arg.replace(/^-J/, ''))
    assert.ok(flags.includes(`-XX:MaxRAM=${256 * MiB}`), argv.join(' '))
    assert.ok(flags.includes('-XX:ActiveProcessorCount=2'), argv.join(' '))
  }
  const go = programFor(language('go'), { code: '', limits })
  assert.equal(go.runner === 'steps' ? go.env?.GOMAXPROCS : null, '2')
  assert.equal(go.runner === 'steps' ? go.env?.GOMEMLIMIT : null, String(Math.floor(256 * MiB * 0.9)))
  assert.match(go.runner === 'steps' ? go.env?.GOCACHE ?? '' : '', /^\/tmp\//, 'the build cache is the run\'s own')
})

test('Java: the file is named for the public top-level class and java starts the class with main', () => {
  const program = programFor(language('java'), { code: 'public class Hello { public static void main(String[] a) {} }', limits: LIMITS })
  assert.equal(program.runner === 'steps' ? program.sourceFile : null, 'Hello.java')
  assert.deepEqual(steps(program)[1]?.argv.slice(-2), ['Hello', '{args}'])
})

test('findJavaEntry: file name from the public top-level type, main class from the type declaring main', () => {
  const cases: Array<[string, string, string, string]> = [
    ['a public class', 'public class Hello {\n  public static void main(String[] args) {}\n}', 'Hello.java', 'Hello'],
    ['no public class', 'class Solution {\n  public static void main(String[] args) {}\n}', 'Main.java', 'Solution'],
    ['no class at all', 'System.out.println(1);', 'Main.java', 'Main'],
    ['a helper before the public class with main', 'class Helper {}\npublic class App {\n  public static void main(String[] a) {}\n}', 'App.java', 'App'],
    ['main in a non-public class after a public one', 'public class Lib {}\nclass Runner {\n  static void main(String[] a) {}\n}', 'Lib.java', 'Runner'],
    ['nested classes are not top-level', 'public class Outer {\n  public static class Inner {}\n  public static void main(String[] a) {}\n}', 'Outer.java', 'Outer'],
    ['a package', 'package com.example.app;\n\npublic class Tool {\n  public static void main(String[] a) {}\n}', 'Tool.java', 'com.example.app.Tool'],
    ['modifiers', 'public final class Fixed {\n  public static void main(final String... args) {}\n}', 'Fixed.java', 'Fixed'],
    ['a record with main', 'public record Point(int x, int y) {\n  public static void main(String[] a) {}\n}', 'Point.java', 'Point'],
    ['an enum with main', 'enum Color { RED;\n  public static void main(String[] a) {}\n}', 'Main.java', 'Color'],
  ]
  for (const [what, code, sourceFile, mainClass] of cases) assert.deepEqual(findJavaEntry(code), { sourceFile, mainClass }, what)
})

test('findJavaEntry ignores classes named in comments, strings, text blocks and char literals', () => {
  const code = [
    '// public class Comment {}',
    '/* public class Block {',
    '   static void main(String[] a) {} */',
    'public class Real {',
    '  static String s = "public class InString { static void main(";',
    '  static char c = \'{\';',
    '  static String block = """',
    '      class InTextBlock { }',
    '      """;',
    '  public static void main(String[] args) {}',
    '}',
  ].join('\n')
  assert.deepEqual(findJavaEntry(code), { sourceFile: 'Real.java', mainClass: 'Real' })
})

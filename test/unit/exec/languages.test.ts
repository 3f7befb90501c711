import assert from 'node:assert/strict'
import { test } from 'node:test'
import { LIBRECHAT_LANGUAGES, resolveLanguage, SUPPORTED_LANGUAGES } from '../../../src/exec/languages/index.ts'

test('resolveLanguage maps py, python and python3 to python and bash and sh to bash', () => {
  for (const lang of ['py', 'python', 'python3']) assert.equal(resolveLanguage(lang)?.id, 'python', lang)
  for (const lang of ['bash', 'sh']) assert.equal(resolveLanguage(lang)?.id, 'bash', lang)
})

test('resolveLanguage ignores case and surrounding whitespace', () => {
  assert.equal(resolveLanguage('PY')?.id, 'python')
  assert.equal(resolveLanguage(' Python3\n')?.id, 'python')
  assert.equal(resolveLanguage('\tBash ')?.id, 'bash')
})

test('resolveLanguage returns null for languages Warden does not run', () => {
  for (const lang of ['', ' ', 'js', 'ts', 'c', 'cpp', 'java', 'php', 'rs', 'go', 'd', 'f90', 'r', 'python2', 'zsh', 'py thon']) {
    assert.equal(resolveLanguage(lang), null, JSON.stringify(lang))
  }
})

// The lookup table is a plain object: its prototype's keys must not pass for languages.
test('resolveLanguage returns null for Object.prototype keys such as constructor and __proto__', () => {
  for (const lang of ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', '__defineGetter__']) {
    assert.equal(resolveLanguage(lang), null, lang)
  }
})

test('every LibreChat lang either resolves to a runtime or is refused with null, and py and bash run', () => {
  assert.equal(LIBRECHAT_LANGUAGES.length, 13)
  const runnable = LIBRECHAT_LANGUAGES.filter((lang) => resolveLanguage(lang) !== null)
  assert.deepEqual(runnable, ['py', 'bash'])
  for (const lang of LIBRECHAT_LANGUAGES) assert.ok(['python', 'bash', null].includes(resolveLanguage(lang)?.id ?? null), lang)
})

test('SUPPORTED_LANGUAGES lists exactly the lang values that resolve', () => {
  assert.deepEqual([...SUPPORTED_LANGUAGES].sort(), ['bash', 'py', 'python', 'python3', 'sh'])
  for (const lang of SUPPORTED_LANGUAGES) assert.notEqual(resolveLanguage(lang), null, lang)
})

test('every descriptor file in src/exec/languages is loaded: adding a language is one new file', async () => {
  const { readdirSync } = await import('node:fs')
  const path = await import('node:path')
  const { LANGUAGES } = await import('../../../src/exec/languages/index.ts')
  const dir = path.resolve(import.meta.dirname, '..', '..', '..', 'src', 'exec', 'languages')
  const files = readdirSync(dir).filter((name) => name.endsWith('.ts') && !['index.ts', 'language.ts'].includes(name))
  assert.equal(LANGUAGES.length, files.length)
  assert.deepEqual(LANGUAGES.map((language) => `${language.id}.ts`).sort(), files.sort(), 'each file is named for its language')
  const aliases = LANGUAGES.flatMap((language) => language.aliases)
  assert.equal(new Set(aliases).size, aliases.length, 'no alias names two languages')
  for (const language of LANGUAGES) {
    for (const file of language.requires) assert.ok(file.startsWith('/usr/'), `${language.id}: ${file} is under /usr, which every jail binds`)
  }
})

test('checkLanguages reports a language whose executable is missing, with the executable, and keeps the rest', async () => {
  const { checkLanguages, LANGUAGES } = await import('../../../src/exec/languages/index.ts')
  const fake = { id: 'nothing', aliases: ['nothing'], program: { runner: 'python' as const }, requires: ['/usr/bin/no-such-runtime'], install: 'no-such-package' }
  const result = checkLanguages([...LANGUAGES, fake])
  assert.deepEqual(result.missing.map(({ language, executables }) => [language.id, executables]), [['nothing', ['/usr/bin/no-such-runtime']]])
  assert.deepEqual(result.available.map((language) => language.id).sort(), ['bash', 'python'])
})

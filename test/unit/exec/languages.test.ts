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

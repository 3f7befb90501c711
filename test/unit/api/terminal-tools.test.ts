import assert from 'node:assert/strict'
import { test } from 'node:test'
import { operation, readQuery, TOOL_OPERATIONS, toolsDocument } from '../../../src/api/terminal/tools.ts'
import { decodeEscapes } from '../../../src/terminal/commands.ts'

/** Open WebUI's query encodings, spec ../shared/spec/open-terminal.md §4.2 (each checked there on the wire). */

const grep = operation('grep_search').query

test('the backend\'s Python values are read: True, 5.0, [\'*.py\', "*.ts"]', () => {
  const values = readQuery(grep, { query: 'x', regex: 'True', case_insensitive: 'False', include: '[\'*.py\', "*.ts"]', max_results: '5.0' })
  assert.deepEqual(values, { query: 'x', path: '.', regex: true, case_insensitive: false, include: ['*.py', '*.ts'], match_per_line: true, max_results: 5 })
})

test('the browser\'s values are read: true, "null" as absent, a,b as a list', () => {
  const values = readQuery(grep, { query: 'x', regex: 'true', include: '*.py,*.ts', max_results: 'null' })
  assert.equal(values.regex, true)
  assert.deepEqual(values.include, ['*.py', '*.ts'])
  assert.equal(values.max_results, 50)
  assert.equal(readQuery(operation('read_file').query, { path: 'a', start_line: 'null', end_line: 'None' }).start_line, undefined)
})

test('a value of the wrong kind, out of range or missing is a 400 invalid_request', () => {
  for (const query of [{ query: 'x', regex: 'maybe' }, { query: 'x', max_results: '5.5' }, { query: 'x', max_results: '9000' }, { regex: 'true' }]) {
    assert.throws(() => readQuery(grep, query), (error: { statusCode?: number, code?: string }) => error.statusCode === 400 && error.code === 'invalid_request', JSON.stringify(query))
  }
})

test('the served document has every tool once, each query parameter with a plain type (never a nullable anyOf)', () => {
  const document = toolsDocument('t') as { paths: Record<string, Record<string, { operationId: string, parameters: Array<{ schema: Record<string, unknown> }> }>> }
  const ids = Object.values(document.paths).flatMap((methods) => Object.values(methods).map((op) => op.operationId))
  assert.deepEqual(ids.sort(), TOOL_OPERATIONS.map((op) => op.operationId).sort())
  for (const methods of Object.values(document.paths)) {
    for (const op of Object.values(methods)) for (const param of op.parameters) assert.equal(typeof param.schema.type, 'string')
  }
})

test('send_process_input decodes escapes as Open Terminal does: \\n, \\x03, \\t, octal', () => {
  assert.equal(decodeEscapes('abc\\n'), 'abc\n')
  assert.equal(decodeEscapes('\\x03'), '\x03')
  assert.equal(decodeEscapes('a\\tb\\033[A'), 'a\tb\x1b[A')
  assert.equal(decodeEscapes('plain \\q stays'), 'plain \\q stays')
})

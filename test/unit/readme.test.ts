import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { test } from 'node:test'
import { EnvSchema } from '../../src/config.ts'
import { errors } from '../../src/errors.ts'

const readme = await readFile(path.resolve(import.meta.dirname, '..', '..', 'README.md'), 'utf8')

function section (title: string): string {
  const start = readme.indexOf(`## ${title}`)
  assert.ok(start >= 0, `README has a "${title}" section`)
  const end = readme.indexOf('\n## ', start + 3)
  return readme.slice(start, end < 0 ? undefined : end)
}

test('the README configuration table lists exactly the variables the server reads', () => {
  const documented = [...section('Configuration').matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((match) => match[1])
  assert.deepEqual([...documented].sort(), Object.keys(EnvSchema.shape).sort())
})

test('the README error table lists every error code the API answers with', () => {
  const table = section('API')
  for (const { code, statusCode } of Object.values(errors)) {
    assert.match(table, new RegExp(`\\| ${statusCode} \\|[^\\n]*\`${code}\``), `${statusCode} ${code} is documented`)
  }
})

test('the README has exactly one start command and one test command for a fresh machine', () => {
  const quickStart = section('Quick start')
  const commands = [...quickStart.matchAll(/```sh\n([^`]+)```/g)].map((match) => match[1]?.trim())
  assert.deepEqual(commands.slice(0, 2), ['CODE_API_KEY=change-me npm start', 'npm test'])
})

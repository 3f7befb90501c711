import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as agents from '@librechat/agents'
import { planToolStubs, toolIdentifier } from '../../../src/ptc/tool-names.ts'

// the client's own rules: it tells the model these names, and checks the code against them
const sdk = agents as unknown as { normalizeToPythonIdentifier (name: string): string, normalizeToBashIdentifier (name: string): string }

const NAMES = [
  'get_weather', 'get-weather', 'get weather', 'get.weather', 'mcp__github__list_issues', '3d-render', '123', 'import', 'class',
  'None', 'await', 'if', 'function', 'declare', 'unset', 'time', 'select', 'in', 'do', 'Ünïcödé-tool', 'a\tb\nc', 'x!@#$%^&*()y',
  'tool.v2-beta', 'pass_', '_private', 'CamelCase', 'yield', 'local', 'export',
]

test('stub identifiers are exactly the client\'s, for Python and for Bash', () => {
  for (const name of NAMES) {
    assert.equal(toolIdentifier(name, 'python'), sdk.normalizeToPythonIdentifier(name), `python: ${JSON.stringify(name)}`)
    assert.equal(toolIdentifier(name, 'bash'), sdk.normalizeToBashIdentifier(name), `bash: ${JSON.stringify(name)}`)
  }
})

test('two tools that become one identifier are refused; the same tool twice is one stub; a name with no usable character is refused', () => {
  const clash = planToolStubs([{ name: 'get-weather' }, { name: 'get_weather' }], 'python')
  assert.equal(clash.ok, false)
  assert.equal(planToolStubs([{ name: 'a.b' }, { name: 'ab' }], 'python').ok, false, 'Python drops the dot: a.b is ab')
  assert.equal(planToolStubs([{ name: 'a.b' }, { name: 'a_b' }], 'python').ok, true)
  assert.equal(planToolStubs([{ name: 'a.b' }, { name: 'a_b' }], 'bash').ok, false, 'Bash turns the dot into _')
  assert.deepEqual(planToolStubs([{ name: 'x' }, { name: 'x' }], 'bash'), { ok: true, stubs: [{ name: 'x', identifier: 'x' }] })
  assert.equal(planToolStubs([{ name: 'été' }], 'python').ok, true)
  assert.equal(planToolStubs([{ name: '天気' }], 'python').ok, false)
})

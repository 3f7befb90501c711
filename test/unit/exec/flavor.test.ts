import assert from 'node:assert/strict'
import { test } from 'node:test'
import { chooseFlavor, importedModules, loadStdlibModules } from '../../../src/exec/flavor.ts'
import bash from '../../../src/exec/languages/bash.ts'
import python from '../../../src/exec/languages/python.ts'

const stdlib = loadStdlibModules('/usr/bin/python3')

test('import statements are read wherever they are: lists, aliases, dotted names, from-imports, indented, after ;', () => {
  assert.deepEqual(importedModules('import os, sys as system\nfrom collections.abc import Mapping\nx = 1; import json\ndef f():\n    import numpy.linalg as la\n'),
    ['os', 'sys', 'collections', 'json', 'numpy'])
  assert.deepEqual(importedModules('print("no imports")\nimportant = 1\nfrom_here = 2'), [])
})

test('Bash and Python that imports only the standard library are light; the data stack, unknown modules, dynamic imports and cells are data', () => {
  assert.ok(stdlib.has('json') && !stdlib.has('numpy'), 'the interpreter lists its standard library')
  assert.equal(chooseFlavor(bash.program, 'echo hi', stdlib), 'light')
  assert.equal(chooseFlavor(python.program, 'print(1)', stdlib), 'light')
  assert.equal(chooseFlavor(python.program, 'import json, math\nfrom collections import Counter\nprint(1)', stdlib), 'light')
  assert.equal(chooseFlavor(python.program, 'import pandas as pd\nprint(1)', stdlib), 'data')
  assert.equal(chooseFlavor(python.program, 'import os\nfrom matplotlib import pyplot', stdlib), 'data')
  assert.equal(chooseFlavor(python.program, 'import some_unknown_module', stdlib), 'data')
  assert.equal(chooseFlavor(python.program, 'np = __import__("numpy")', stdlib), 'data')
  assert.equal(chooseFlavor({ runner: 'python', cell: { executionCount: 1 } }, 'print(1)', stdlib), 'data')
  assert.equal(chooseFlavor(python.program, 'print(1)', new Set()), 'data', 'no standard library list: the safe choice')
})

#!/usr/bin/env node
// `node --test` on Node 20 takes no globs: collect test/**/*.test.ts (or the directories given) and run
// them one file at a time, since end-to-end files start real servers and jails.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import path from 'node:path'

const roots = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['test']
const files = roots.flatMap((root) => root.endsWith('.ts')
  ? [root]
  : readdirSync(root, { recursive: true }).map(String).filter((name) => name.endsWith('.test.ts')).map((name) => path.join(root, name)))
files.sort()
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], { stdio: 'inherit' })
process.exit(result.status ?? 1)

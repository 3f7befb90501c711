#!/usr/bin/env node
// Runs before `npm start` and `npm test` (npm's prestart/pretest), with Node built-ins only: on a fresh
// Debian or Ubuntu machine it installs what Warden needs and says so; elsewhere it names what is missing.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'

const repo = path.resolve(import.meta.dirname, '..')
const PYTHON = process.env.PYTHON_PATH ?? '/usr/bin/python3'
const DEBIAN_PACKAGES = ['bubblewrap', 'util-linux', 'python3', 'python3-numpy', 'python3-pandas', 'python3-matplotlib']

function works (command, args) {
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0
}

function missingSystemParts () {
  const missing = []
  if (!works('bwrap', ['--version']) && !works('nsjail', ['--help'])) missing.push('a jail (bubblewrap or nsjail)')
  if (!works('setpriv', ['--version'])) missing.push('setpriv (util-linux)')
  if (!works(PYTHON, ['-c', 'import numpy, pandas, matplotlib'])) missing.push(`${PYTHON} with numpy, pandas and matplotlib`)
  return missing
}

function run (command, args) {
  process.stderr.write(`warden: ${command} ${args.join(' ')}\n`)
  execFileSync(command, args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
}

let missing = missingSystemParts()
if (missing.length > 0) {
  const canInstall = process.getuid?.() === 0 && works('apt-get', ['--version'])
  if (!canInstall) {
    process.stderr.write(`warden: missing ${missing.join('; ')}.\n` +
      `Install them (Debian/Ubuntu: sudo apt-get install ${DEBIAN_PACKAGES.join(' ')}) and run again.\n`)
    process.exit(1)
  }
  process.stderr.write(`warden: installing missing system packages (${missing.join('; ')})\n`)
  run('apt-get', ['update', '-q'])
  run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...DEBIAN_PACKAGES])
  missing = missingSystemParts()
  if (missing.length > 0) {
    process.stderr.write(`warden: still missing after install: ${missing.join('; ')}\n`)
    process.exit(1)
  }
}

if (!existsSync(path.join(repo, 'node_modules', '.package-lock.json'))) {
  run('npm', ['ci', '--no-audit', '--no-fund'])
}

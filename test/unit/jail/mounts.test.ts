import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'
import { SYSTEM_MOUNTS } from '../../../src/jail/mounts.ts'

// The one mount table (src/jail/mounts.ts) builds bubblewrap's arguments; nsjail reads nsjail.cfg. The
// two must show a jail the same host: this reads every `mount { … }` of nsjail.cfg and compares.

const cfg = readFileSync(path.resolve(import.meta.dirname, '..', '..', '..', 'nsjail.cfg'), 'utf8')

interface CfgMount { src?: string, dst: string, isBind: boolean, rw: boolean, isSymlink: boolean, mandatory: boolean, content?: string, fstype?: string }

function parseMounts (text: string): CfgMount[] {
  return [...text.matchAll(/^mount \{(.*)\}\s*$/gm)].map(([, body = '']) => {
    const field = (name: string) => new RegExp(`\\b${name}: "((?:[^"\\\\]|\\\\.)*)"`).exec(body)?.[1]
    const flag = (name: string) => new RegExp(`\\b${name}: (true|false)`).exec(body)?.[1]
    const content = field('src_content')
    return {
      src: field('src'),
      dst: field('dst') ?? '',
      isBind: flag('is_bind') === 'true',
      rw: flag('rw') === 'true',
      isSymlink: flag('is_symlink') === 'true',
      mandatory: flag('mandatory') !== 'false',
      content: content === undefined ? undefined : JSON.parse(`"${content}"`),
      fstype: field('fstype'),
    }
  })
}

const nsjail = parseMounts(cfg)

test('nsjail.cfg binds exactly the table\'s read-only host paths, with the same optional ones', () => {
  const fromCfg = nsjail.filter((mount) => mount.isBind && !mount.rw && !mount.dst.startsWith('/dev/'))
    .map((mount) => ({ path: mount.dst, source: mount.src, optional: !mount.mandatory }))
  const fromTable = SYSTEM_MOUNTS.filter((mount) => mount.kind === 'ro-bind')
    .map((mount) => ({ path: mount.path, source: mount.path, optional: mount.optional === true }))
  assert.deepEqual(fromCfg, fromTable)
})

test('nsjail.cfg has exactly the table\'s symlinks', () => {
  const fromCfg = nsjail.filter((mount) => mount.isSymlink && !mount.dst.startsWith('/dev/'))
    .map((mount) => ({ path: mount.dst, target: mount.src, optional: !mount.mandatory }))
  const fromTable = SYSTEM_MOUNTS.filter((mount) => mount.kind === 'symlink')
    .map((mount) => ({ path: mount.path, target: mount.target, optional: mount.optional === true }))
  assert.deepEqual(fromCfg, fromTable)
})

test('nsjail.cfg writes the table\'s synthetic /etc files with the same contents', () => {
  const fromCfg = nsjail.filter((mount) => mount.content !== undefined).map((mount) => ({ path: mount.dst, content: mount.content }))
  const fromTable = SYSTEM_MOUNTS.filter((mount) => mount.kind === 'file').map((mount) => ({ path: mount.path, content: mount.content }))
  assert.deepEqual(fromCfg, fromTable)
})

test('nothing of nsjail.cfg binds a host path read-write (only /dev nodes, which are not directories)', () => {
  const writable = nsjail.filter((mount) => mount.isBind && mount.rw && !mount.dst.startsWith('/dev/'))
  assert.deepEqual(writable, [])
})

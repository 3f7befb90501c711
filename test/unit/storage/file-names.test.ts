import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { contentTypeFor } from '../../../src/storage/content-type.ts'
import { basename, validateFileName } from '../../../src/storage/file-names.ts'

function assertAccepted (name: string): void {
  assert.deepEqual(validateFileName(name), { ok: true, name }, `rejected ${JSON.stringify(name)}`)
}

function assertRejected (name: string, reason: RegExp): void {
  const check = validateFileName(name)
  assert.equal(check.ok, false, `accepted ${JSON.stringify(name)}`)
  if (!check.ok) assert.match(check.reason, reason)
}

describe('validateFileName', () => {
  test('plain, nested, dotted, dashed and spaced names are accepted unchanged', () => {
    for (const name of [
      'data.csv', 'pptx/editing.md', 'a/b/c/d.txt', '.hidden', 'dir/.env', 'a.b.c', '-rf', '--help.txt',
      'my report (final).pdf', ' leading space', 'trailing space ', '...', 'a/.../b', 'x..y', '..x', 'x..',
    ]) {
      assertAccepted(name)
    }
  })

  test('unicode letters, CJK and emoji are accepted', () => {
    for (const name of ['données/résumé.csv', '日本語.txt', 'Ελληνικά.md', 'графік.png', '😀.png', 'e\u0301.txt']) {
      assertAccepted(name)
    }
  })

  test('an empty name is rejected as empty', () => {
    assertRejected('', /empty/)
  })

  test('an absolute name is rejected as absolute', () => {
    assertRejected('/etc/passwd', /absolute/)
    assertRejected('/', /absolute/)
  })

  test('"." and ".." segments are rejected anywhere in the name', () => {
    for (const name of ['..', '.', '../x', 'a/../b', 'a/..', './a', 'a/./b', 'a/.']) {
      assertRejected(name, /"\." or "\.\."/)
    }
  })

  test('empty segments from doubled or trailing slashes are rejected', () => {
    for (const name of ['a//b', 'a/', 'dir/sub/']) assertRejected(name, /empty path segment/)
  })

  test('NUL, newline, tab, other C0 controls and DEL are rejected as control characters', () => {
    for (const name of ['a\0b', 'a\nb', 'a\rb.txt', 'tab\there', '\x1b[31m.txt', 'x\x1f', 'del\x7f']) {
      assertRejected(name, /control character/)
    }
  })

  test('a backslash is rejected rather than read as a directory separator', () => {
    assertRejected('a\\b.txt', /backslash/)
    assertRejected('..\\..\\evil', /backslash/)
  })

  test('a lone surrogate is rejected as invalid Unicode', () => {
    assertRejected('\uD800.txt', /Unicode/)
    assertRejected('x\uDC00', /Unicode/)
    assertRejected('\uDE00\uD83D', /Unicode/)
  })

  test('a segment of 255 bytes is accepted and one of 256 or 300 bytes is rejected', () => {
    assertAccepted('a'.repeat(255))
    assertAccepted(`dir/${'é'.repeat(127)}x`) // 255 bytes in UTF-8
    assertRejected('a'.repeat(256), /255 bytes/)
    assertRejected(`dir/${'é'.repeat(150)}`, /255 bytes/) // 150 characters, 300 bytes
  })

  test('a name over 1024 bytes is rejected even when every segment is short', () => {
    const segments = Array.from({ length: 8 }, () => 'a'.repeat(127)) // 8 * 127 + 7 = 1023 bytes
    assertAccepted(segments.join('/'))
    assertRejected(`${segments.join('/')}/bc`, /1024 bytes/)
  })
})

describe('basename', () => {
  test('returns the last segment of a name', () => {
    assert.equal(basename('a/b/c.csv'), 'c.csv')
    assert.equal(basename('c.csv'), 'c.csv')
    assert.equal(basename('dir/.hidden'), '.hidden')
  })
})

describe('contentTypeFor', () => {
  test('common code-interpreter files get their type from the extension', () => {
    const expected: Record<string, string> = {
      'plot.png': 'image/png',
      'photo.JPG': 'image/jpeg',
      'photo.jpeg': 'image/jpeg',
      'anim.gif': 'image/gif',
      'a.webp': 'image/webp',
      'scan.tiff': 'image/tiff',
      'scan.tif': 'image/tiff',
      'report.pdf': 'application/pdf',
      'book.xlsx': 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
      'old.xls': 'application/vnd.ms-excel',
      'doc.docx': 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
      'deck.pptx': 'application/vnd.openxmlformats-officedocument.presentationml.presentation',
      'out.zip': 'application/zip',
      'out.tar.gz': 'application/gzip',
      'out.tar': 'application/x-tar',
      'df.parquet': 'application/vnd.apache.parquet',
      'arr.npy': 'application/x-npy',
      'model.pkl': 'application/x-python-pickle',
      'song.mp3': 'audio/mpeg',
      'clip.wav': 'audio/wav',
      'video.mp4': 'video/mp4',
    }
    for (const [name, type] of Object.entries(expected)) assert.equal(contentTypeFor(name), type, name)
  })

  test('text types carry charset=utf-8', () => {
    const expected: Record<string, string> = {
      'data.csv': 'text/csv',
      'data.tsv': 'text/tab-separated-values',
      'notes.txt': 'text/plain',
      'README.md': 'text/markdown',
      'page.html': 'text/html',
      'data.json': 'application/json',
      'feed.xml': 'application/xml',
      'conf.yaml': 'application/yaml',
      'conf.yml': 'application/yaml',
      'script.py': 'text/x-python',
      'run.sh': 'text/x-shellscript',
      'app.js': 'text/javascript',
      'app.ts': 'text/x-typescript',
      'chart.svg': 'image/svg+xml',
    }
    for (const [name, type] of Object.entries(expected)) {
      assert.equal(contentTypeFor(name), `${type}; charset=utf-8`, name)
    }
  })

  test('the extension is read from the last segment, so a dotted directory does not count', () => {
    assert.equal(contentTypeFor('v1.2/README'), 'application/octet-stream')
    assert.equal(contentTypeFor('out/plot.png'), 'image/png')
  })

  test('the extension wins over a declared type', () => {
    assert.equal(contentTypeFor('plot.png', 'text/html'), 'image/png')
  })

  test('an unknown extension uses a well-formed declared type without its parameters', () => {
    assert.equal(contentTypeFor('data.weird', 'application/vnd.custom+json'), 'application/vnd.custom+json')
    assert.equal(contentTypeFor('data.weird', 'Application/X-Thing; q=1'), 'application/x-thing')
    assert.equal(contentTypeFor('Makefile', 'text/x-makefile'), 'text/x-makefile; charset=utf-8')
  })

  test('an unknown extension with a missing, malformed or octet-stream declared type is application/octet-stream', () => {
    for (const declared of [undefined, '', 'garbage', 'text/', '/plain', 'text/plain/x', 'a b/c', 'application/octet-stream']) {
      assert.equal(contentTypeFor('blob.bin9', declared), 'application/octet-stream', String(declared))
    }
    assert.equal(contentTypeFor('.bashrc'), 'application/octet-stream')
  })
})

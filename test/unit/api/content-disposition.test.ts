import assert from 'node:assert/strict'
import { validateHeaderValue } from 'node:http'
import { test } from 'node:test'
import { contentDisposition } from '../../../src/api/files.ts'

const HEADER = /^attachment; filename="([^"\\]*)"; filename\*=UTF-8''(.*)$/

function parts (name: string): { fallback: string, extended: string } {
  const header = contentDisposition(name)
  const match = HEADER.exec(header)
  assert.ok(match, `unexpected shape: ${header}`)
  return { fallback: match[1] ?? '', extended: match[2] ?? '' }
}

test('an ASCII name appears unchanged in both parameters', () => {
  assert.equal(contentDisposition('report-2024_v2.csv'), 'attachment; filename="report-2024_v2.csv"; filename*=UTF-8\'\'report-2024_v2.csv')
})

test('spaces survive in the quoted fallback and are percent-encoded in filename*', () => {
  assert.deepEqual(parts('my report.csv'), { fallback: 'my report.csv', extended: 'my%20report.csv' })
})

test('double quotes and backslashes become _ in the fallback and are percent-encoded in filename*', () => {
  assert.deepEqual(parts('say "hi".txt'), { fallback: 'say _hi_.txt', extended: 'say%20%22hi%22.txt' })
  assert.deepEqual(parts('a\\b.txt'), { fallback: 'a_b.txt', extended: 'a%5Cb.txt' })
})

test('a unicode name gets an ASCII fallback and its exact UTF-8 bytes in filename*', () => {
  assert.deepEqual(parts('résumé.pdf'), { fallback: 'r_sum_.pdf', extended: 'r%C3%A9sum%C3%A9.pdf' })
  assert.deepEqual(parts('图表.png'), { fallback: '__.png', extended: '%E5%9B%BE%E8%A1%A8.png' })
  assert.equal(parts('📈.png').extended, '%F0%9F%93%88.png')
})

test('% and ; become _ in the fallback and are percent-encoded in filename*', () => {
  assert.deepEqual(parts('100%.txt'), { fallback: '100_.txt', extended: '100%25.txt' })
  assert.deepEqual(parts('a;b.txt'), { fallback: 'a_b.txt', extended: 'a%3Bb.txt' })
  assert.deepEqual(parts('%41.txt'), { fallback: '_41.txt', extended: '%2541.txt' })
})

test('CR, LF and other control characters never reach the header', () => {
  const header = contentDisposition('evil\r\nSet-Cookie: a=b\t\0.txt')
  assert.doesNotMatch(header, /[\r\n\t\0]/)
  assert.deepEqual(parts('evil\r\nx.txt'), { fallback: 'evil__x.txt', extended: 'evil%0D%0Ax.txt' })
  assert.doesNotThrow(() => validateHeaderValue('content-disposition', header))
})

/** A name of 1..20 code points drawn from ASCII, punctuation, controls, Latin, CJK and astral characters. */
function randomName (random: () => number): string {
  const pools = [[0x20, 0x7e], [0x00, 0x1f], [0x7f, 0xff], [0x370, 0x3ff], [0x4e00, 0x4fff], [0x1f300, 0x1f64f]] as const
  let name = ''
  const length = 1 + Math.floor(random() * 20)
  for (let i = 0; i < length; i++) {
    const [low, high] = pools[Math.floor(random() * pools.length)] ?? pools[0]
    name += String.fromCodePoint(low + Math.floor(random() * (high - low + 1)))
  }
  return name
}

test('for 5000 random names the header is valid, printable ASCII, and filename* decodes to the name', () => {
  let seed = 2024
  const random = () => { seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648; return seed / 2_147_483_648 }
  for (let i = 0; i < 5000; i++) {
    const name = randomName(random)
    const header = contentDisposition(name)
    assert.match(header, /^[\x20-\x7e]+$/, JSON.stringify(name))
    assert.doesNotThrow(() => validateHeaderValue('content-disposition', header), JSON.stringify(name))
    const { fallback, extended } = parts(name)
    assert.equal(fallback.length, name.length, 'the fallback replaces each UTF-16 unit with one character')
    assert.equal(decodeURIComponent(extended), name)
  }
})

// RFC 8187 §3.2.1: value-chars = *( pct-encoded / attr-char ); attr-char has no ' ( ) *, and a bare '
// ends the charset and language fields, so strict parsers (the content-disposition package) reject it.
test('filename* uses only RFC 8187 attr-chars and percent-encoding, also for \' ( ) * !', () => {
  const attrValue = /^(?:%[0-9A-F]{2}|[A-Za-z0-9!#$&+\-.^_`|~])*$/
  for (const name of ["it's.txt", 'copy (1).csv', 'a*b.txt', 'hello!.md', 'x=1,y=2.txt', 'a[1]{2}<3>@4?.txt', 'a/b:c.txt']) {
    assert.match(parts(name).extended, attrValue, name)
    assert.equal(decodeURIComponent(parts(name).extended), name)
  }
})

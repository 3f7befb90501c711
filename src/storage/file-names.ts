/**
 * Names of files inside the work directory /mnt/data, as uploads and outputs carry them. A name may
 * hold sub-directories (`pptx/editing.md`, spec §3.4) but must stay inside the directory and be a name
 * every filesystem and client can carry, so each rule below rejects rather than repairs: a repaired
 * name would differ from what the code in the jail opens.
 */

export type FileNameCheck = { ok: true, name: string } | { ok: false, reason: string }

/** Linux NAME_MAX: the longest single path component, in bytes. */
export const MAX_SEGMENT_BYTES = 255
/** Well under PATH_MAX (4096) once `/mnt/data/` and a client's own prefix are added. */
export const MAX_NAME_BYTES = 1024

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Accept `name` as a relative path under /mnt/data, or say which rule it breaks (for a 400 message). */
export function validateFileName (name: string): FileNameCheck {
  if (typeof name !== 'string' || name.length === 0) return reject('The file name is empty.')
  // a lone surrogate has no UTF-8 encoding: Buffer.from would silently turn it into U+FFFD
  if (LONE_SURROGATE.test(name)) return reject('The file name is not valid Unicode.')
  if (hasControlCharacter(name)) return reject('The file name contains a control character.')
  // Windows clients send `a\b`; whether that means a directory or a literal backslash is a guess
  if (name.includes('\\')) return reject('The file name contains a backslash.')
  if (name.startsWith('/')) return reject('The file name must be relative to /mnt/data, not absolute.')
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) {
    return reject(`The file name is longer than ${MAX_NAME_BYTES} bytes.`)
  }
  for (const segment of name.split('/')) {
    if (segment === '') return reject('The file name contains an empty path segment.')
    if (segment === '.' || segment === '..') {
      return reject('The file name contains a "." or ".." path segment.')
    }
    if (Buffer.byteLength(segment, 'utf8') > MAX_SEGMENT_BYTES) {
      return reject(`A path segment of the file name is longer than ${MAX_SEGMENT_BYTES} bytes.`)
    }
  }
  return { ok: true, name }
}

/** The last segment of a name: `a/b/c.csv` -> `c.csv`. */
export function basename (name: string): string {
  return name.slice(name.lastIndexOf('/') + 1)
}

function hasControlCharacter (name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i)
    if (code <= 0x1f || code === 0x7f) return true
  }
  return false
}

function reject (reason: string): FileNameCheck {
  return { ok: false, reason }
}

import { nanoid } from 'nanoid'

/**
 * Every id on the wire (session, storage session, file) is a 21-character nanoid. LibreChat's download
 * route rejects anything else with 400 (`isValidID`, spec §5), and ids are path components in the
 * store, so this pattern is also the path-traversal guard: no `/`, no `.`, no NUL.
 */
export const ID_PATTERN = /^[A-Za-z0-9_-]{21}$/

/** A new random id: nanoid's default URL-safe alphabet, 21 characters (~126 bits). */
export function newId (): string {
  return nanoid()
}

export function isId (value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value)
}

import fc from 'fast-check'

/**
 * fast-check arbitraries for the JSON Schemas the server publishes (zod -> OpenAPI at /docs/json), so
 * that the fuzzer follows every route's body schema as it is, including routes added later. Each value
 * is valid by the schema, or one mutation away from it (a wrong type, a missing or extra field, a value
 * past a bound): the answers to bodies close to valid are where a handler's own assumptions live.
 */

export interface JsonSchema {
  type?: string | string[]
  properties?: Record<string, JsonSchema>
  required?: string[]
  items?: JsonSchema
  anyOf?: JsonSchema[]
  oneOf?: JsonSchema[]
  allOf?: JsonSchema[]
  enum?: unknown[]
  const?: unknown
  minLength?: number
  maxLength?: number
  minItems?: number
  maxItems?: number
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  exclusiveMaximum?: number
  pattern?: string
  $ref?: string
}

/** Strings that mean something somewhere in Warden: languages, id shapes, paths, odd Unicode. */
const DICTIONARY = [
  '', 'py', 'python', 'bash', 'sh', 'js', 'go', 'c', 'print(1)', 'echo 1', 'a'.repeat(21), 'AAAAAAAAAAAAAAAAAAAA-',
  '../../etc/passwd', '/mnt/data/x', 'a/b', '\u0000', '\ud800', 'é', '💥', '-rf', '%00', 'null', '{}', ' ',
]

const MAX_GENERATED_CHARS = 80
const MAX_GENERATED_ITEMS = 4

function anyJson (): fc.Arbitrary<unknown> {
  return fc.jsonValue({ maxDepth: 3 })
}

function stringFor (schema: JsonSchema): fc.Arbitrary<string> {
  const min = schema.minLength ?? 0
  const max = Math.max(min, Math.min(schema.maxLength ?? MAX_GENERATED_CHARS, MAX_GENERATED_CHARS))
  const options: Array<fc.Arbitrary<string>> = [fc.string({ minLength: min, maxLength: max, unit: 'binary' }), fc.constantFrom(...DICTIONARY)]
  if (schema.pattern !== undefined) options.push(fc.stringMatching(new RegExp(schema.pattern)))
  return fc.oneof(...options)
}

function numberFor (schema: JsonSchema, integer: boolean): fc.Arbitrary<number> {
  const bounds = {
    min: schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + (integer ? 1 : 1e-9) : schema.minimum ?? -1e9,
    max: schema.exclusiveMaximum !== undefined ? schema.exclusiveMaximum - (integer ? 1 : 1e-9) : schema.maximum ?? 1e9,
  }
  return integer
    ? fc.oneof(fc.integer({ min: Math.ceil(Math.max(bounds.min, -(2 ** 31))), max: Math.floor(Math.min(bounds.max, 2 ** 31)) }), fc.constantFrom(...[0, 1, -1, 1500].filter((n) => n >= bounds.min && n <= bounds.max), bounds.min))
    : fc.double({ min: bounds.min, max: bounds.max, noNaN: true })
}

/** Values valid by `schema` (as far as a generator can tell: refinements in code are not in the schema). */
export function validValue (schema: JsonSchema, depth = 0): fc.Arbitrary<unknown> {
  if (depth > 6) return fc.constant(null)
  if (schema.const !== undefined) return fc.constant(schema.const)
  if (schema.enum !== undefined) return fc.constantFrom(...schema.enum)
  const alternatives = schema.anyOf ?? schema.oneOf
  if (alternatives !== undefined) return fc.oneof(...alternatives.map((alternative) => validValue(alternative, depth + 1)))
  if (schema.allOf !== undefined && schema.allOf.length > 0) return validValue(schema.allOf[0]!, depth + 1)
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type
  switch (type) {
    case 'string': return stringFor(schema)
    case 'integer': return numberFor(schema, true)
    case 'number': return numberFor(schema, false)
    case 'boolean': return fc.boolean()
    case 'null': return fc.constant(null)
    case 'array': {
      const minLength = schema.minItems ?? 0
      const maxLength = Math.max(minLength, Math.min(schema.maxItems ?? MAX_GENERATED_ITEMS, MAX_GENERATED_ITEMS))
      return fc.array(schema.items === undefined ? anyJson() : validValue(schema.items, depth + 1), { minLength, maxLength })
    }
    case 'object': {
      // every optional field present half of the time, so that a valid body is not mostly its optional fields
      const required = new Set(schema.required ?? [])
      const fields = Object.entries(schema.properties ?? {}).map(([name, property]) => {
        const value = validValue(property, depth + 1)
        return fc.tuple(fc.constant(name), required.has(name) ? value : fc.option(value, { freq: 2, nil: undefined }))
      })
      return fc.tuple(...fields).map((entries) => Object.fromEntries(entries.filter(([, value]) => value !== undefined)))
    }
    default: return anyJson()
  }
}

/** One step away from valid: a field of the wrong type, a required one dropped, an unknown one added, or any JSON at all. */
export function nearValue (schema: JsonSchema): fc.Arbitrary<unknown> {
  const valid = validValue(schema)
  const names = Object.keys(schema.properties ?? {})
  const options: Array<fc.Arbitrary<unknown>> = [anyJson(), fc.constantFrom(null, [], 'text', 0, true)]
  if (names.length > 0) {
    options.push(
      fc.tuple(valid, fc.constantFrom(...names), anyJson()).map(([body, name, value]) => ({ ...(body as object), [name]: value })),
      fc.tuple(valid, fc.constantFrom(...names)).map(([body, name]) => { const copy = { ...(body as Record<string, unknown>) }; delete copy[name]; return copy }),
      fc.tuple(valid, fc.string({ maxLength: 12 }), anyJson()).map(([body, name, value]) => ({ ...(body as object), [name]: value }))
    )
  }
  return fc.oneof(...options)
}

/** Bodies for a route: mostly valid (they reach the handler), the rest near valid. */
export function bodyFor (schema: JsonSchema): fc.Arbitrary<unknown> {
  return fc.oneof({ arbitrary: validValue(schema), weight: 3 }, { arbitrary: nearValue(schema), weight: 2 })
}

/**
 * Values read off an OpenAPI document's JSON Schemas: one each schema accepts (`sample`) and the ones
 * its keywords refuse (`refused`), so a test can send a route what its document calls valid and invalid.
 */

type Schema = Record<string, unknown>

const num = (x: unknown): number | undefined => (typeof x === 'number' ? x : undefined)

/** A value the schema accepts, built from its required parts. Throws on a pattern its guess misses. */
export function sample(s: Schema): unknown {
  if ('const' in s) return s.const
  if (Array.isArray(s.enum)) return s.enum[0] as unknown
  const first = (s.anyOf ?? s.oneOf) as Schema[] | undefined
  if (first?.[0]) return sample(first[0])
  switch (s.type) {
    case 'string': {
      const value = 'dev-1'
      if (typeof s.pattern === 'string' && !new RegExp(s.pattern).test(value))
        throw new Error(`no sample for the pattern ${s.pattern}`)
      return value
    }
    case 'integer':
    case 'number':
      return num(s.minimum) ?? 1
    case 'boolean':
      return true
    case 'array':
      return Array.from({ length: num(s.minItems) ?? 1 }, () => sample(s.items as Schema))
    case 'object': {
      const props = (s.properties ?? {}) as Record<string, Schema>
      const names = (s.propertyNames as Schema | undefined)?.enum as string[] | undefined
      if (names?.[0] !== undefined && (num(s.minProperties) ?? 0) > 0)
        return { [names[0]]: sample((s.additionalProperties ?? {}) as Schema) }
      const required = (s.required ?? []) as string[]
      return Object.fromEntries(required.map((k) => [k, sample(props[k] ?? {})]))
    }
    default:
      return {}
  }
}

/**
 * Values the schema's own keywords refuse: outside an enum, past a bound, not an integer, too long,
 * not matching the pattern, the wrong type, too many or too few items or properties. `text`: as a
 * query string carries them.
 */
export function refused(s: Schema, text = false): unknown[] {
  const out: unknown[] = []
  if (Array.isArray(s.enum)) out.push('not-listed')
  const max = num(s.maximum)
  const min = num(s.minimum)
  if (max !== undefined) out.push(max + 1)
  if (min !== undefined) out.push(min - 1)
  if (s.type === 'integer') out.push(1.5)
  const maxLength = num(s.maxLength)
  if (maxLength !== undefined) out.push('x'.repeat(maxLength + 1))
  if (typeof s.pattern === 'string') {
    const re = new RegExp(s.pattern)
    const miss = ['a/b', '#', ''].find((c) => !re.test(c))
    if (miss !== undefined) out.push(miss)
  }
  if (!text && s.type === 'string') out.push(42)
  if (s.type === 'array') {
    const maxItems = num(s.maxItems)
    if (maxItems !== undefined)
      out.push(Array.from({ length: maxItems + 1 }, () => sample(s.items as Schema)))
    if ((num(s.minItems) ?? 0) > 0) out.push([])
  }
  if (s.type === 'object') {
    if ((num(s.minProperties) ?? 0) > 0) out.push({})
    if (s.propertyNames) out.push({ 'not-listed': {} })
  }
  return text ? out.map(String) : out
}

/**
 * PostgreSQL array literals for the batch statements' `unnest` columns, built with one `join` per column.
 * node-postgres turns a JS array into the same literal by appending to a string element by element and
 * escaping each element with two regular expressions: that was 14 % of everything paku allocated under
 * a QoS 1 burst, ~2.5 KB per stored row (docs/performance.md, "Array literals and timestamps").
 * PostgreSQL parses the same text either way.
 */

// Inside a double-quoted element only the backslash and the double quote need escaping.
const NEEDS_ESCAPE = /[\\"]/
const ESCAPED = /[\\"]/g

/** `{"a","b",NULL}` for a `::text[]` parameter: every element quoted, so any text (empty, "NULL", braces, commas, spaces) stays itself. */
export function textArray(values: readonly (string | null)[]): string {
  let plain = true
  // Indexed loops: these run per row and column, and for-of allocated an iterator result per element.
  for (let i = 0; i < values.length && plain; i++) {
    const v = values[i]
    plain = v !== null && v !== undefined && !NEEDS_ESCAPE.test(v)
  }
  if (plain) return values.length === 0 ? '{}' : `{"${values.join('","')}"}`
  return `{${values.map((v) => (v === null || v === undefined ? 'NULL' : `"${v.replace(ESCAPED, '\\$&')}"`)).join(',')}}`
}

/**
 * `{1,2,NULL}` for a `::int2[]`, `::int[]` or `::int8[]` parameter. What is not a safe integer (NaN from
 * an invalid Date, say) goes as NULL, so PostgreSQL refuses that row as data (a NOT NULL column) and the
 * writer sets it aside alone, as it did with a date it could not parse; a thrown error would fail the batch.
 */
export function intArray(values: readonly number[]): string {
  for (let i = 0; i < values.length; i++)
    if (!Number.isSafeInteger(values[i]))
      return `{${values.map((x) => (Number.isSafeInteger(x) ? x : 'NULL')).join(',')}}`
  return `{${values.join(',')}}`
}

/**
 * RFC 4180 CSV. Cells that a spreadsheet would run as a formula (= + - @ at the start, and not a
 * number) get a leading apostrophe: device ids and string metrics come from devices, not from us.
 */
export function toCsv(
  header: readonly string[],
  rows: ReadonlyArray<ReadonlyArray<unknown>>,
): string {
  const lines = [header.map(cell).join(',')]
  for (const r of rows) lines.push(r.map(cell).join(','))
  return lines.join('\r\n') + '\r\n'
}

function cell(x: unknown): string {
  if (x === null || x === undefined) return ''
  let s =
    x instanceof Date ? x.toISOString() : typeof x === 'object' ? JSON.stringify(x) : String(x)
  if (/^[=+\-@\t\r]/.test(s) && !/^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(s)) s = `'${s}`
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s
}

/**
 * `npm run code-figures [-- LIMIT]`: a few code-health figures of src/, each with the places behind it:
 * functions longer than LIMIT lines (default 150) and those taking four or more positional parameters;
 * Kysely query-builder calls against raw `sql` statements (and which of those type their rows by hand);
 * fixed sleeps in tests; lines over the formatter's 100 columns.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import ts from 'typescript'

const ROOT = join(import.meta.dirname, '..')
const limit = Number(process.argv.slice(2).find((a) => !a.startsWith('--')) ?? 150)
const verbose = !process.argv.includes('--summary')

const files = (dir: string) =>
  readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(dir, f))

type Fn = { file: string; name: string; lines: number; params: number }

/** The functions of one file with their length in lines and their parameter count. */
export function functionLengths(path: string, text: string): Omit<Fn, 'file'>[] {
  const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true)
  const out: Omit<Fn, 'file'>[] = []
  const visit = (node: ts.Node) => {
    if (
      ts.isFunctionDeclaration(node) ||
      ts.isMethodDeclaration(node) ||
      ts.isArrowFunction(node) ||
      ts.isFunctionExpression(node)
    ) {
      const start = sf.getLineAndCharacterOfPosition(node.getStart()).line
      const end = sf.getLineAndCharacterOfPosition(node.getEnd()).line
      const parent = node.parent
      const name =
        (ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node)) && node.name
          ? node.name.getText()
          : ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent)
            ? parent.name.getText()
            : `(anonymous at ${start + 1})`
      out.push({ name, lines: end - start + 1, params: node.parameters.length })
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

const BUILDER = new Set(['selectFrom', 'insertInto', 'updateTable', 'deleteFrom', 'mergeInto'])
/** Statements, not fragments: a template that starts with one of these words. */
const STATEMENT = /^\s*(\/\*.*?\*\/\s*)?(WITH|SELECT|INSERT|UPDATE|DELETE|MERGE)\b/is

type Queries = { builder: number; statements: number; handTyped: string[]; catalog: number }

/**
 * Query-builder calls and raw `sql` statements of one file. A statement's row type counts as checked
 * when it is built from the generated table types (src/db/schema.ts); a type written out by hand is
 * listed, since nothing compares it with the table.
 */
export function queries(path: string, text: string): Queries {
  const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true)
  const out: Queries = { builder: 0, statements: 0, handTyped: [], catalog: 0 }
  const visit = (node: ts.Node) => {
    if (
      ts.isPropertyAccessExpression(node) &&
      BUILDER.has(node.name.text) &&
      ts.isCallExpression(node.parent)
    )
      out.builder++
    if (ts.isTaggedTemplateExpression(node) && node.tag.getText() === 'sql') {
      const body = ts.isNoSubstitutionTemplateLiteral(node.template)
        ? node.template.text
        : node.template.head.text
      if (STATEMENT.test(body)) {
        out.statements++
        const type = node.typeArguments?.[0]?.getText()
        if (type !== undefined && !/\b(Row|Selectable|DB)\b|\bschema\./.test(type)) {
          const line = sf.getLineAndCharacterOfPosition(node.getStart()).line + 1
          out.handTyped.push(`${path}:${line}`)
          // PostgreSQL's catalog and functions are not in the generated schema: their row types can only be written.
          if (/\b(pg_[a-z_]+|information_schema\.\w+)\b/.test(node.template.getText()))
            out.catalog++
        }
      }
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

/** Awaited timers in a test file: `await sleep(ms)`, `await delay(ms)`, `await setTimeout(ms)`, or a
 * Promise resolved by setTimeout. Returns each one's line and its milliseconds when a literal. */
export function sleeps(
  path: string,
  text: string,
): Array<{ line: number; ms: number | undefined }> {
  const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true)
  const out: Array<{ line: number; ms: number | undefined }> = []
  const literalMs = (e: ts.Expression | undefined) =>
    e && ts.isNumericLiteral(e) ? Number(e.text.replace(/_/g, '')) : undefined
  const visit = (node: ts.Node) => {
    if (ts.isAwaitExpression(node)) {
      const e = node.expression
      let ms: number | undefined
      let found = false
      if (ts.isCallExpression(e) && /^(sleep|delay|setTimeout)$/.test(e.expression.getText())) {
        found = true
        ms = literalMs(e.arguments[0])
      } else if (ts.isNewExpression(e) && e.expression.getText() === 'Promise') {
        const inner = e.arguments?.[0]
        const call = inner && ts.isArrowFunction(inner) ? inner.body : undefined
        if (call && ts.isCallExpression(call) && call.expression.getText() === 'setTimeout') {
          found = true
          ms = literalMs(call.arguments[1])
        }
      }
      if (found) out.push({ line: sf.getLineAndCharacterOfPosition(node.getStart()).line + 1, ms })
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

const sources = files(join(ROOT, 'src')).map((f) => ({
  path: relative(ROOT, f),
  text: readFileSync(f, 'utf8'),
}))
const production = sources.filter((s) => !s.path.endsWith('.test.ts'))
const show = (line: string) => verbose && console.log(line)

const all: Fn[] = production.flatMap((s) =>
  functionLengths(s.path, s.text).map((x) => ({ ...x, file: s.path })),
)
const long = all.filter((x) => x.lines > limit).sort((a, b) => b.lines - a.lines)
for (const x of long) show(`${String(x.lines).padStart(5)}  ${x.file}  ${x.name}`)
console.log(
  `${long.length} functions over ${limit} lines; the longest has ${Math.max(...all.map((x) => x.lines))}`,
)
const positional = all.filter((x) => x.params >= 4)
for (const x of positional)
  show(`${String(x.params).padStart(5)}  ${x.file}  ${x.name} (parameters)`)
console.log(`${positional.length} functions take four or more positional parameters`)

const q = production
  .filter((s) => s.path !== join('src', 'db', 'schema.ts'))
  .map((s) => queries(s.path, s.text))
const handTyped = q.flatMap((x) => x.handTyped)
for (const at of handTyped) show(`  hand-typed rows  ${at}`)
console.log(
  `${q.reduce((n, x) => n + x.builder, 0)} query-builder calls; ${q.reduce((n, x) => n + x.statements, 0)} raw sql statements, ${handTyped.length} of them with a hand-written row type (${q.reduce((n, x) => n + x.catalog, 0)} on PostgreSQL's own catalog and functions)`,
)

const waits = sources
  .filter((s) => s.path.endsWith('.test.ts'))
  .flatMap((s) => sleeps(s.path, s.text).map((x) => ({ ...x, file: s.path })))
for (const w of waits) show(`  sleep ${w.ms ?? '?'} ms  ${w.file}:${w.line}`)
console.log(
  `${waits.length} fixed sleeps in tests, ${(waits.reduce((n, w) => n + (w.ms ?? 0), 0) / 1000).toFixed(1)} s in total`,
)

const wide = sources.flatMap((s) => s.text.split('\n').filter((l) => l.length > 100))
console.log(
  `${wide.length} lines over 100 columns (strings and comments the formatter leaves whole)`,
)

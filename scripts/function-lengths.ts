/**
 * `node --import tsx scripts/function-lengths.ts [LIMIT]`: the functions of src/ longer than LIMIT lines
 * (default 150), longest first, and the functions that take four or more positional parameters.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import ts from 'typescript'

const ROOT = join(import.meta.dirname, '..')
const limit = Number(process.argv[2] ?? 150)

const files = (dir: string) =>
  readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(dir, f))

export function functionLengths(
  path: string,
  text: string,
): Array<{ name: string; lines: number; params: number }> {
  const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true)
  const out: Array<{ name: string; lines: number; params: number }> = []
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

const all = files(join(ROOT, 'src'))
  .filter((f) => !f.endsWith('.test.ts'))
  .flatMap((f) =>
    functionLengths(f, readFileSync(f, 'utf8')).map((x) => ({ ...x, file: relative(ROOT, f) })),
  )
const long = all.filter((x) => x.lines > limit).sort((a, b) => b.lines - a.lines)
for (const x of long) console.log(`${String(x.lines).padStart(5)}  ${x.file}  ${x.name}`)
console.log(
  `${long.length} functions over ${limit} lines; the longest has ${Math.max(...all.map((x) => x.lines))}`,
)
const positional = all.filter((x) => x.params >= 4)
for (const x of positional)
  console.log(`${String(x.params).padStart(5)}  ${x.file}  ${x.name} (parameters)`)
console.log(`${positional.length} functions take four or more positional parameters`)

/**
 * The old Docker Compose stack's `compose/.env`, read the way Docker Compose reads it (for
 * `paku import-env`, import-env.ts).
 */

/** A variable of the old file, with the line it was (last) set on. */
export type OldVar = { value: string; line: number }

/** Something about one line of the old file; `skipped` lines were not imported at all. */
export type LineProblem = { line: number; message: string; skipped: boolean }

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/

/**
 * Reads a .env file as Docker Compose v2 does (compose-go's dotenv parser; docs.docker.com, "Syntax
 * for environment files"): `KEY=VALUE` (or `KEY: VALUE`), an optional `export ` prefix, `#` comments,
 * blank lines; unquoted values end at ` #` and are trimmed; single quotes are literal (`\'` is a quote);
 * double quotes take `\n \t \r \\ \" \$`-style escapes and may span lines; unquoted and double-quoted
 * values are interpolated (`$VAR`, `${VAR}`, `${VAR:-default}` and the other forms, `$$` for `$`); a
 * key set twice keeps the last value. Differences, each reported with its line number: compose stops
 * at the first bad line, this skips it and goes on; variables are looked up only among those set
 * earlier in the file, never in the shell environment (compose asks the shell first).
 */
export function parseComposeEnv(text: string): {
  vars: Map<string, OldVar>
  problems: LineProblem[]
} {
  const src = text.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n')
  const vars = new Map<string, OldVar>()
  const problems: LineProblem[] = []
  let pos = 0
  let line = 1
  while (pos < src.length) {
    const eol = src.indexOf('\n', pos)
    const end = eol < 0 ? src.length : eol
    const raw = src.slice(pos, end)
    const at = line
    let next = end + 1
    let nextLine = line + 1
    const stmt = raw.replace(/^[ \t]+/, '')
    const problem = (message: string, skipped = false) =>
      problems.push({ line: at, message, skipped })
    const key = /^(?:export[ \t]+)?([A-Za-z0-9_.\-[\]]+)[ \t]*([=:])[ \t]*/.exec(stmt)
    if (stmt === '' || stmt.startsWith('#')) {
      // blank or comment
    } else if (!key) {
      const bare = /^(?:export[ \t]+)?([A-Za-z_][\w.-]*)[ \t]*$/.exec(stmt)
      problem(
        bare
          ? `${bare[1]} has no value (compose takes it from the shell environment); not imported`
          : 'not KEY=VALUE; skipped',
        true,
      )
    } else {
      const name = key[1] as string
      const start = pos + (raw.length - stmt.length) + key[0].length
      const refs: References = {
        lookup: (ref) => vars.get(ref)?.value,
        missing: (ref) =>
          problem(
            `$${ref} is not set earlier in the file (compose would take it from the shell environment); read as empty`,
          ),
        problem,
      }
      let value: string | undefined
      const quote = src[start]
      if (quote === '"' || quote === "'") {
        const q = readQuoted(src, start)
        if (q === undefined) {
          problem(`unterminated ${quote === '"' ? 'double' : 'single'} quote; skipped`, true)
        } else {
          value = quote === '"' ? interpolate(unescapeDouble(q.body), refs) : q.body
          const closeEol = src.indexOf('\n', q.close)
          const after = src.slice(q.close + 1, closeEol < 0 ? src.length : closeEol)
          if (!/^[ \t]*(#.*)?$/.test(after)) problem('text after the closing quote ignored')
          next = closeEol < 0 ? src.length : closeEol + 1
          nextLine = line + countNewlines(src.slice(start, q.close)) + 1
        }
      } else {
        // An inline comment needs a blank before its #: `a#b` is a value, `a #b` is `a`.
        const rest = src.slice(start, end)
        const cut = rest.search(/[ \t]#/)
        value = interpolate((cut < 0 ? rest : rest.slice(0, cut)).trimEnd(), refs)
      }
      if (value !== undefined) {
        const before = vars.get(name)
        if (before)
          problem(
            `${name} is set again (first on line ${before.line}); the last one counts, as in compose`,
          )
        vars.set(name, { value, line: at })
      }
    }
    pos = next
    line = nextLine
  }
  return { vars, problems }
}

function countNewlines(s: string): number {
  let n = 0
  for (const c of s) if (c === '\n') n++
  return n
}

/**
 * The body of a quoted value starting at `start` (the quote) and the index of its closing quote. As in
 * compose, a backslash before the quote character keeps the quote; any other backslash stays for
 * unescapeDouble (double quotes) or as it is (single quotes).
 */
function readQuoted(src: string, start: number): { body: string; close: number } | undefined {
  const quote = src[start]
  let body = ''
  let escaped = false
  for (let i = start + 1; i < src.length; i++) {
    const c = src[i] as string
    if (c === quote) {
      if (!escaped) return { body, close: i }
      escaped = false
      body += c
    } else if (escaped) {
      escaped = false
      body += '\\' + c
    } else if (c === '\\') {
      escaped = true
    } else {
      body += c
    }
  }
  return undefined
}

/** Compose's escapes in double quotes; `\$` becomes `$$`, which interpolation turns into a literal `$`. */
function unescapeDouble(s: string): string {
  const simple: Record<string, string> = {
    a: '\x07',
    b: '\b',
    f: '\f',
    n: '\n',
    r: '\r',
    t: '\t',
    v: '\v',
    '"': '"',
    '\\': '\\',
    $: '$$',
  }
  return s.replace(
    /\\(?:([abfnrtv"\\$])|0([0-7]{0,3}))/g,
    (_, c: string | undefined, oct: string | undefined) =>
      c !== undefined ? (simple[c] as string) : String.fromCharCode(Number.parseInt(oct || '0', 8)),
  )
}

/** How interpolation resolves `$NAME` and reports what it cannot. */
type References = {
  lookup: (name: string) => string | undefined
  /** `name` is not set earlier in the file. */
  missing: (name: string) => void
  problem: (message: string) => void
}

/**
 * Compose's interpolation (docs.docker.com, "Interpolation"): `$$`, `$VAR`, `${VAR}`, `${VAR:-x}`,
 * `${VAR-x}`, `${VAR:?x}`, `${VAR?x}`, `${VAR:+x}`, `${VAR+x}`, nested in `x`. An unset variable is empty.
 */
function interpolate(s: string, refs: References): string {
  const { lookup, missing, problem } = refs
  let out = ''
  let i = 0
  while (i < s.length) {
    const c = s[i]
    if (c !== '$') {
      out += c
      i++
      continue
    }
    if (s[i + 1] === '$') {
      out += '$'
      i += 2
      continue
    }
    if (s[i + 1] === '{') {
      const close = closingBrace(s, i + 1)
      const m =
        close < 0
          ? null
          : /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([\s\S]*))?$/.exec(s.slice(i + 2, close))
      if (!m) {
        problem(
          `invalid interpolation ${JSON.stringify(close < 0 ? s.slice(i) : s.slice(i, close + 1))} kept as it is (compose refuses it)`,
        )
        out += close < 0 ? s.slice(i) : s.slice(i, close + 1)
        i = close < 0 ? s.length : close + 1
        continue
      }
      const [, name = '', op, word = ''] = m
      const value = lookup(name)
      const set = value !== undefined
      const full = set && value !== ''
      const alt = () => interpolate(word, refs)
      if (op === undefined || op === '?' || op === ':?') {
        if (op === undefined ? !set : op === '?' ? !set : !full) {
          if (op === undefined) missing(name)
          else
            problem(
              `\${${name}${op}…}: ${name} is ${set ? 'empty' : 'not set'} (compose refuses the file); read as empty`,
            )
        }
        out += value ?? ''
      } else if (op === ':-') out += full ? value : alt()
      else if (op === '-') out += set ? value : alt()
      else if (op === ':+') out += full ? alt() : ''
      else out += set ? alt() : ''
      i = close + 1
      continue
    }
    const name = NAME.exec(s.slice(i + 1))?.[0]
    if (name === undefined) {
      // A `$` that starts no variable stays as it is.
      out += '$'
      i++
      continue
    }
    const value = lookup(name)
    if (value === undefined) missing(name)
    out += value ?? ''
    i += 1 + name.length
  }
  return out
}

/** Index of the `}` closing the `{` at `open`, counting nested `${…}`; -1 when there is none. */
function closingBrace(s: string, open: number): number {
  let depth = 0
  for (let i = open; i < s.length; i++) {
    if (s[i] === '{' && s[i - 1] === '$') depth++
    else if (s[i] === '}' && --depth === 0) return i
  }
  return -1
}

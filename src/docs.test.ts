/**
 * The documentation holds together: every relative link and anchor in README.md and docs/ resolves,
 * every reference to a docs page in the code names a page and heading that exist, and no file speaks of
 * how it was developed (rounds, issue numbers, files outside the repository).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { describe, it } from 'node:test'

const ROOT = join(import.meta.dirname, '..')
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8')
const markdownFiles = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
]

/** Headings outside fenced code blocks, as written (without the leading #s). */
export function headings(markdown: string): string[] {
  let fenced = false
  return markdown.split('\n').flatMap((line) => {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced
    const m = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    return m ? [m[1] as string] : []
  })
}

/** GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to '-', repeats numbered. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>()
  const out = new Set<string>()
  for (const h of headings(markdown)) {
    const text = h.replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/<[^>]+>/g, '')
    const base = text
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/ /g, '-')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.add(n === 0 ? base : `${base}-${n}`)
  }
  return out
}

/** The relative links of a page (inline links and images), outside code. */
export function links(markdown: string): string[] {
  const prose = markdown.replace(/^(```|~~~)[\s\S]*?^\1/gm, '').replace(/`[^`\n]*`/g, '')
  return [...prose.matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)]
    .map((m) => m[1] as string)
    .filter((u) => !/^[a-z]+:/i.test(u))
}

/** What is wrong with the links of the page at `path` (repository-relative); [] when all resolve. */
export function brokenLinks(
  path: string,
  markdown: string,
  readPage: (path: string) => string | undefined,
): string[] {
  return links(markdown).flatMap((link) => {
    const [file = '', anchor] = link.split('#')
    const target = file === '' ? path : normalize(join(dirname(path), decodeURI(file)))
    const text = readPage(target)
    if (text === undefined) return [`${path}: ${link}: no file ${target}`]
    if (anchor === undefined || !target.endsWith('.md')) return []
    return anchors(text).has(anchor)
      ? []
      : [`${path}: ${link}: no heading with anchor #${anchor} in ${target}`]
  })
}

function readPage(path: string): string | undefined {
  if (path.startsWith('..') || !existsSync(join(ROOT, path))) return undefined
  try {
    return read(path)
  } catch {
    return '' // a directory
  }
}

/** Files tracked by git: what a clone has. */
function trackedFiles(): string[] {
  return execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\n')
    .filter(Boolean)
}

/** This file's own samples are not references or history. */
const SELF = 'src/docs.test.ts'
const sourceFiles = () =>
  trackedFiles().filter(
    (f) =>
      f !== SELF && (/\.(ts|mjs|cjs|js|sql|sh|ya?ml|service|css|html)$/.test(f) || f === '.ci/run'),
  )

/**
 * References to docs pages in a source file: `docs/page.md`, `docs/page.md#anchor`, and
 * `docs/page.md, "Heading"` (comment markers at line starts are joined into one text first).
 */
export function docReferences(
  source: string,
): Array<{ page: string; anchor?: string; heading?: string }> {
  const text = source.replace(/\n\s*(?:\*|\/\/|--|#)\s?/g, ' ')
  return [...text.matchAll(/docs\/([\w-]+\.md)(?:#([\w-]+))?(?:[,;]\s*"([^"]+)")?/g)].map((m) => ({
    page: `docs/${m[1]}`,
    anchor: m[2],
    heading: m[3],
  }))
}

export function brokenReferences(
  source: string,
  readPage: (path: string) => string | undefined,
): string[] {
  return docReferences(source).flatMap(({ page, anchor, heading }) => {
    const text = readPage(page)
    if (text === undefined) return [`${page}: no such page`]
    if (anchor !== undefined && !anchors(text).has(anchor))
      return [`${page}#${anchor}: no such heading`]
    const plain = (h: string) => h.replace(/`/g, '')
    if (heading !== undefined && !headings(text).some((h) => plain(h) === plain(heading)))
      return [`${page}, "${heading}": no such heading`]
    return []
  })
}

// Built from pieces so that this file does not match itself.
const ORDINAL = [
  'first',
  'second',
  'third',
  'fourth',
  'fifth',
  'sixth',
  'seventh',
  'eighth',
  'ninth',
  'tenth',
  'eleventh',
  'twelfth',
].join('|')
const HISTORY: Array<[string, RegExp]> = [
  ['a development round', new RegExp(`\\b(${ORDINAL})\\s+${'rou'}nd\\b`, 'i')],
  ['an issue number', new RegExp(`\\b${'iss'}ues?\\s+#?\\d+|\\(#\\d+\\)`, 'i')],
  ['a file outside the repository', new RegExp(`\\.\\./${'sha'}red\\b`)],
  [
    'the old compatibility contract',
    new RegExp(`${'cont'}ract\\s*§|${'peer'}-systems\\s*§|${'des'}ign\\s*§`, 'i'),
  ],
  [
    'first-person narrative',
    new RegExp(`\\bI (${['ran', 'measured', 'tried', 'think', 'found', 'changed'].join('|')})\\b`),
  ],
]

/** What in a file's text tells development history rather than how things are. */
export function historyIn(text: string): string[] {
  return text
    .split('\n')
    .flatMap((line, i) =>
      HISTORY.filter(([, re]) => re.test(line)).map(
        ([what]) => `line ${i + 1}: ${what}: ${line.trim().slice(0, 120)}`,
      ),
    )
}

/**
 * The benchmark may run the old stack from its bench files beside the checkout (PEER_DIR's default);
 * that line is the one place a path outside the repository is named.
 */
const OUTSIDE_ALLOWED = new Set(['scripts/bench.ts'])

describe('documentation', () => {
  it('finds broken links and anchors (positive control)', () => {
    const pages: Record<string, string> = {
      'docs/a.md': '# A\n\n## Keys and scopes\n\n## Keys and scopes\n',
      'docs/b.md': '',
    }
    const look = (p: string) => pages[p]
    const page =
      '[ok](a.md#keys-and-scopes) [ok2](a.md#keys-and-scopes-1) [x](a.md#keys) [y](c.md) [z](../README.md) `[code](nope.md)` [web](https://example.com)'
    assert.deepEqual(brokenLinks('docs/b.md', page, look), [
      'docs/b.md: a.md#keys: no heading with anchor #keys in docs/a.md',
      'docs/b.md: c.md: no file docs/c.md',
      'docs/b.md: ../README.md: no file README.md',
    ])
    assert.deepEqual(
      [...anchors('## `GET /health`\n## Install on a VM\n## What stays, and what changes?\n')],
      ['get-health', 'install-on-a-vm', 'what-stays-and-what-changes'],
    )
  })

  it('every relative link and anchor in README.md and docs/ resolves', () => {
    assert.ok(markdownFiles.length >= 10, 'positive control: the docs pages were found')
    const broken = markdownFiles.flatMap((f) => brokenLinks(f, read(f), readPage))
    assert.deepEqual(broken, [])
    assert.ok(
      markdownFiles.flatMap((f) => links(read(f))).length > 50,
      'positive control: links were checked',
    )
  })

  it('finds broken references to docs pages in code (positive control)', () => {
    const pages: Record<string, string> = {
      'docs/ota.md': '# OTA\n## Device protocols\n## `cmd/ota`\n',
    }
    const source = [
      '/** See docs/ota.md, "Device protocols" and docs/ota.md#device-protocols, docs/ota.md, "`cmd/ota`". */',
      '// docs/ota.md, "Rollouts"; docs/nope.md; docs/ota.md#rollouts',
      ' * (docs/ota.md,',
      ' * "Device protocols")',
    ].join('\n')
    assert.deepEqual(
      brokenReferences(source, (p) => pages[p]),
      [
        'docs/ota.md, "Rollouts": no such heading',
        'docs/nope.md: no such page',
        'docs/ota.md#rollouts: no such heading',
      ],
    )
    assert.equal(docReferences(source).length, 7)
  })

  it('every reference to a docs page in the code names a page and heading that exist', () => {
    const files = sourceFiles()
    const refs = files.flatMap((f) => docReferences(read(f)))
    assert.ok(refs.length > 50, `positive control: references were found (${refs.length})`)
    assert.deepEqual(
      files.flatMap((f) => brokenReferences(read(f), readPage).map((e) => `${f}: ${e}`)),
      [],
    )
  })

  it('tells development history apart from how things are (positive control)', () => {
    // Pieced together, like the patterns, so that no line of this file reads as history itself.
    const [round, issue] = ['rou' + 'nd', 'iss' + 'ue']
    const sample = [
      `The ninth ${round} measured it.`,
      `See ${issue} #7.`,
      'As ../' + 'shared/spec says',
      'contract ' + '§4.4',
      'I ' + 'ran the bench',
      'A round trip (RFC 4291 §2.5.5.2)',
    ].join('\n')
    assert.deepEqual(
      historyIn(sample).map((s) => s.split(':')[0]),
      ['line 1', 'line 2', 'line 3', 'line 4', 'line 5'],
    )
  })

  it('no file in the repository speaks of development rounds, issue numbers or files outside it', () => {
    const files = trackedFiles().filter(
      (f) =>
        f !== SELF &&
        !f.endsWith('package-lock.json') &&
        !/\.(png|jpg|ico|woff2?)$/.test(f) &&
        existsSync(join(ROOT, f)),
    )
    assert.ok(files.length > 200, 'positive control: the repository was read')
    const found = files.flatMap((f) =>
      historyIn(read(f))
        .filter((e) => !(OUTSIDE_ALLOWED.has(f) && e.includes('outside the repository')))
        .map((e) => `${relative(ROOT, join(ROOT, f))}: ${e}`),
    )
    assert.deepEqual(found, [])
  })
})

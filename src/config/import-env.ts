import { ENV_TABLE } from './env.js'
import { loadConfig, maskUrl } from './load.js'

/**
 * `paku import-env`: the old Docker Compose stack's `compose/.env` as paku's PAKU_* variables.
 * Pure functions: parse the old file the way Docker Compose does, map it, render the new file.
 * The old variables, their defaults and users: docs/compatibility.md, "Configuration".
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
      const lookup = (ref: string) => vars.get(ref)?.value
      const missing = (ref: string) =>
        problem(
          `$${ref} is not set earlier in the file (compose would take it from the shell environment); read as empty`,
        )
      let value: string | undefined
      const quote = src[start]
      if (quote === '"' || quote === "'") {
        const q = readQuoted(src, start)
        if (q === undefined) {
          problem(`unterminated ${quote === '"' ? 'double' : 'single'} quote; skipped`, true)
        } else {
          value =
            quote === '"' ? interpolate(unescapeDouble(q.body), lookup, missing, problem) : q.body
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
        value = interpolate(
          (cut < 0 ? rest : rest.slice(0, cut)).trimEnd(),
          lookup,
          missing,
          problem,
        )
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

/**
 * Compose's interpolation (docs.docker.com, "Interpolation"): `$$`, `$VAR`, `${VAR}`, `${VAR:-x}`,
 * `${VAR-x}`, `${VAR:?x}`, `${VAR?x}`, `${VAR:+x}`, `${VAR+x}`, nested in `x`. An unset variable is empty.
 */
function interpolate(
  s: string,
  lookup: (name: string) => string | undefined,
  missing: (name: string) => void,
  problem: (message: string) => void,
): string {
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
      const alt = () => interpolate(word, lookup, missing, problem)
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

// ---------------------------------------------------------------------------------------------------

/** One line of the new file: a comment, a warning (a comment too), a variable, or a commented-out example. */
export type OutLine =
  | { comment: string }
  | { warning: string }
  | { name: string; value: string }
  | { example: string; value: string }

/** A group of lines; groups are separated by a blank line. */
export type Block = OutLine[]

export type ImportResult = {
  blocks: Block[]
  /** Old variables present in the file that paku does not need, with why (names only: never values). */
  notCarried: Array<{ names: string[]; reason: string }>
  /** Old variables the old stack did not document either. */
  unknown: string[]
  /** Every block's warnings, in order. */
  warnings: string[]
  /** From parsing the old file. */
  problems: LineProblem[]
  /** What paku's own config validation says about the produced variables (no config file: defaults). */
  configIssues: string[]
}

/** Old variables paku has no use for, and why; one line each in the new file when present in the old. */
export const NOT_CARRIED: ReadonlyArray<{ names: readonly string[]; reason: string }> = [
  {
    names: ['MQTT_HOST', 'MQTT_PORT'],
    reason:
      "where the old collectors found the broker; paku's ingest and EcoFlow poller run inside it",
  },
  {
    names: ['MQTT_TOPIC_PATTERN'],
    reason: 'set by compose, read by nothing in the old stack either',
  },
  {
    names: ['FORCE_REGEN_CERTS'],
    reason:
      'made the old broker generate new self-signed certificates; paku reads certificate files, never makes them',
  },
  {
    names: ['GF_SECURITY_ADMIN_USER', 'GF_SECURITY_ADMIN_PASSWORD', 'GF_SERVER_ROOT_URL'],
    reason:
      "Grafana's own, not paku's: keep them for Grafana (e.g. in /etc/default/grafana-server)",
  },
  {
    names: ['PORT', 'HOST'],
    reason:
      "the OTA service's listener in its container; paku's is PAKU_HTTP_HOST/PAKU_HTTP_PORT, by default the same 0.0.0.0:8080",
  },
  {
    names: ['MAX_RUNTIME_SECONDS'],
    reason: 'how long the old emulators ran; paku emulate … --count N instead',
  },
  {
    names: ['HEATER_DEVICE_ID', 'HEATER_PUBLISH_INTERVAL'],
    reason: 'the old heater emulator; paku emulate heater --device ID --interval SEC instead',
  },
  {
    names: [
      'HETZNER_HOST',
      'HETZNER_USER',
      'HETZNER_SSH_PUB_KEY_PATH',
      'HETZNER_SSH_PRIV_KEY_PATH',
      'HETZNER_PAKU_DIR',
    ],
    reason:
      "the old deploy tooling's SSH target; paku's Deploy workflow has secrets of its own (docs/operations.md)",
  },
  {
    names: [
      'COLLECTOR_MQTT_TOPIC',
      'COLLECTOR_DB_HOST',
      'COLLECTOR_DB_PORT',
      'EMULATOR_MQTT_TOPIC',
      'EMULATOR_PUBLISH_INTERVAL',
    ],
    reason: 'read by nothing in the old stack either',
  },
]

const ECOFLOW_REGIONS: Record<string, string> = {
  'api-e.ecoflow.com': 'eu',
  'api-a.ecoflow.com': 'us',
  'api.ecoflow.com': 'global',
}

/** Where the old OTA service's firmware volume lives on a Docker host. */
export const OLD_FIRMWARE_VOLUME = '/var/lib/docker/volumes/paku_firmware/_data'

const SECRET_NAMES = new Set(ENV_TABLE.filter((e) => e.secret).map((e) => e.name))
const PAKU_NAMES = new Set(ENV_TABLE.map((e) => e.name))

const comment = (text: string): OutLine => ({ comment: text })
const warning = (text: string): OutLine => ({ warning: text })
const set = (name: string, value: string): OutLine => ({ name, value })
const example = (name: string, value: string): OutLine => ({ example: name, value })

/** Maps the text of an old `compose/.env` to paku's variables; never throws. */
export function importEnv(text: string): ImportResult {
  const { vars, problems } = parseComposeEnv(text)
  const used = new Set<string>()
  /** The value of an old variable (undefined when absent), marking it as taken care of. */
  const get = (name: string) => {
    used.add(name)
    return vars.get(name)?.value
  }
  const present = (names: string[]) => names.filter((n) => vars.has(n))
  const blocks: Block[] = []
  const block = (...lines: OutLine[]) => {
    blocks.push(lines)
    return lines
  }

  // PostgreSQL. The old services got PGUSER/PGPASSWORD/PGDATABASE from POSTGRES_*, and PGHOST/PGPORT.
  const dbNames = [
    'POSTGRES_USER',
    'POSTGRES_PASSWORD',
    'POSTGRES_DB',
    'PGHOST',
    'PGPORT',
    'PGUSER',
    'PGPASSWORD',
    'PGDATABASE',
  ]
  const dbFrom = present(dbNames)
  const [pgUser, pgPassword, pgDb, pgHost, pgPort, pgUser2, pgPassword2, pgDb2] = dbNames.map(get)
  if (dbFrom.length === 0) {
    block(
      comment(
        'No POSTGRES_* in the old file: PAKU_DATABASE_URL is not set, so paku runs its embedded PostgreSQL.',
      ),
    )
  } else {
    const b = block(
      comment(`PostgreSQL, from ${dbFrom.join(', ')} (the password percent-encoded).`),
    )
    const user = pgUser || pgUser2 || 'paku'
    const db = pgDb || pgDb2 || 'paku'
    const password = pgPassword || pgPassword2
    if (!(pgUser || pgUser2) || !(pgDb || pgDb2))
      b.push(comment('An unset user or database name is paku, the old default.'))
    const oldHost = (pgHost ?? '').trim()
    let host = oldHost
    if (oldHost === '' || oldHost === 'postgres' || oldHost === 'paku_postgres') {
      host = '127.0.0.1'
      b.push(
        comment(
          `The old host "${oldHost || 'postgres'}" is the database's Docker service name; on the new VM PostgreSQL is`,
        ),
        comment('usually on 127.0.0.1 (change it if not).'),
      )
    }
    if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`
    let port = (pgPort ?? '').trim() || '5432'
    if (!/^\d{1,5}$/.test(port)) {
      b.push(warning(`PGPORT ${JSON.stringify(port)} is not a port number; 5432 is used`))
      port = '5432'
    }
    if (!password)
      b.push(
        warning(
          'POSTGRES_PASSWORD is empty or missing: add the database password to PAKU_DATABASE_URL',
        ),
      )
    if (password)
      b.push(
        comment(
          'The password is the old one: if the database role on the new VM has another, put that one in.',
        ),
      )
    b.push(
      comment(
        'Grafana reads the database as the read-only role paku_grafana instead (docs/grafana.md).',
      ),
    )
    const auth = encodeURIComponent(user) + (password ? `:${encodeURIComponent(password)}` : '')
    b.push(set('PAKU_DATABASE_URL', `postgres://${auth}@${host}:${port}/${encodeURIComponent(db)}`))
  }

  // The one shared MQTT credential: the old broker's password file had exactly this user.
  const mqttUser = get('MQTT_USER')
  const mqttPassword = get('MQTT_PASSWORD')
  if (mqttUser === undefined && mqttPassword === undefined) {
    block(
      warning(
        'no MQTT_USER/MQTT_PASSWORD: the old broker used edge/changeme; set PAKU_MQTT_USERNAME/PAKU_MQTT_PASSWORD if the devices do',
      ),
    )
  } else {
    const b = block(
      comment(
        `From ${present(['MQTT_USER', 'MQTT_PASSWORD']).join(' and ')}: the shared credential of the devices, the Home Assistant bridge`,
      ),
    )
    b.push(comment('and CI; it keeps full rights, as before (docs/security.md: moving off it).'))
    if (!mqttUser) b.push(comment("MQTT_USER is not set: edge, the old broker's default."))
    b.push(set('PAKU_MQTT_USERNAME', mqttUser || 'edge'))
    if (mqttPassword) b.push(set('PAKU_MQTT_PASSWORD', mqttPassword))
    else
      b.push(
        warning(
          'MQTT_PASSWORD is empty or missing, so the old broker used its default (changeme; paku with the development compose file): set PAKU_MQTT_PASSWORD to what the devices use',
        ),
      )
  }

  // MQTT over TLS: MQTT_CN only named the old certificate; paku reads certificate files.
  const cn = get('MQTT_CN')
  block(
    comment(
      `MQTT over TLS (port 8883).${cn ? ` From MQTT_CN: ${oneLine(cn)} is the name in the old broker's certificate.` : ''}`,
    ),
    comment(
      "That certificate and its key are in the old host's Docker volume paku_mqttcerts (server.crt, server.key,",
    ),
    comment(
      'signed by the ca.crt the devices trust): copy them to /etc/paku/tls (docs/operations.md, "TLS") and uncomment:',
    ),
    example('PAKU_MQTT_TLS_ENABLED', 'true'),
    example('PAKU_MQTT_TLS_CERT_FILE', '/etc/paku/tls/server.crt'),
    example('PAKU_MQTT_TLS_KEY_FILE', '/etc/paku/tls/server.key'),
  )

  // The admin key: the old OTA service read API_KEY, which compose set from OTA_API_KEY.
  const [otaKey, plainKey] = [get('OTA_API_KEY'), get('API_KEY')]
  const keyName = otaKey !== undefined ? 'OTA_API_KEY' : 'API_KEY'
  const apiKey = otaKey ?? plainKey
  if (apiKey === '') {
    block(comment(`${keyName} is empty: the admin API stays off (503), as before.`))
  } else if (apiKey !== undefined) {
    const b = block(
      comment(`From ${keyName}: the admin key CI uploads firmware with (header X-API-Key).`),
    )
    if (apiKey.length < 32) {
      b.push(
        warning(
          `${keyName} is ${apiKey.length} characters; paku needs at least 32 and does not start with a shorter one: put a new key from \`openssl rand -hex 32\` here and into the CI workflow's OTA_API_KEY secret`,
        ),
      )
    }
    b.push(set('PAKU_OTA_API_KEY', apiKey))
  }

  // Where devices download firmware: the old Caddy served the OTA service under https://{PAKU_DOMAIN}/ota.
  const domain = (get('PAKU_DOMAIN') ?? '').trim()
  const publicUrl = derivePublicUrl(domain)
  if (publicUrl) {
    block(
      comment(
        'From PAKU_DOMAIN: the old Caddy served the OTA service under /ota of it. A reverse proxy in front of paku',
      ),
      comment(
        'keeps those URLs working (docs/operations.md); or change this to where devices reach paku.',
      ),
      set('PAKU_PUBLIC_URL', publicUrl),
    )
  } else {
    const what =
      domain === ''
        ? 'not set (the old default :80'
        : `${JSON.stringify(domain)} (${domain.startsWith(':') ? 'Caddy on plain HTTP' : 'not one host name'}`
    block(
      warning(
        `PAKU_DOMAIN is ${what}, no domain): PAKU_PUBLIC_URL cannot be derived; set it to the base URL devices download firmware from`,
      ),
      example('PAKU_PUBLIC_URL', 'https://iot.example.com/ota'),
    )
  }

  // The firmware volume. FIRMWARE_STORAGE_PATH is a path inside the old container, never one on the host.
  const storage = get('FIRMWARE_STORAGE_PATH')
  block(
    comment(
      `The old OTA service's firmware (FIRMWARE_STORAGE_PATH, ${oneLine(storage || '/firmware')} in its container) is the`,
    ),
    comment(`Docker volume paku_firmware, on the old host usually ${OLD_FIRMWARE_VOLUME}.`),
    comment(
      'Copy it over and run `paku firmware import DIR` once; or let paku read it at every start (the paku user',
    ),
    comment(
      'must be able to: /var/lib/docker is root-only, and paku does not start with a directory it cannot read):',
    ),
    example('PAKU_OTA_FIRMWARE_DIR', OLD_FIRMWARE_VOLUME),
  )

  // EcoFlow: the old collector polled exactly one device, ECOFLOW_DEVICE_SN.
  const ecoflowNames = present([
    'ECOFLOW_ACCESS_KEY',
    'ECOFLOW_SECRET_KEY',
    'ECOFLOW_DEVICE_SN',
    'ECOFLOW_API_URL',
    'REST_API_INTERVAL',
  ])
  const [ak, sk, sn, apiUrl, interval] = [
    'ECOFLOW_ACCESS_KEY',
    'ECOFLOW_SECRET_KEY',
    'ECOFLOW_DEVICE_SN',
    'ECOFLOW_API_URL',
    'REST_API_INTERVAL',
  ].map(get)
  if (!ak || !sk) {
    if (ecoflowNames.length > 0) {
      const b = block(
        comment(
          `${ecoflowNames.join(', ')}: without both keys EcoFlow stays off; not carried over.`,
        ),
      )
      if (ak || sk)
        b.push(
          warning(
            `only ${ak ? 'ECOFLOW_ACCESS_KEY' : 'ECOFLOW_SECRET_KEY'} is set: paku needs both EcoFlow keys`,
          ),
        )
    }
  } else {
    const b = block(
      comment('EcoFlow, from ECOFLOW_ACCESS_KEY and ECOFLOW_SECRET_KEY.'),
      set('PAKU_ECOFLOW_ACCESS_KEY', ak),
      set('PAKU_ECOFLOW_SECRET_KEY', sk),
    )
    if (sn?.trim()) {
      b.push(
        comment('From ECOFLOW_DEVICE_SN: the one device the old collector polled.'),
        set('PAKU_ECOFLOW_DEVICES', sn.trim()),
      )
    } else {
      b.push(
        warning(
          'ECOFLOW_DEVICE_SN is empty: the old collector polled only that serial number (so nothing); paku with PAKU_ECOFLOW_DEVICES empty polls every device of the account: set serial numbers to limit it',
        ),
      )
    }
    if (apiUrl !== undefined) {
      b.push(
        comment(
          `From ECOFLOW_API_URL${apiUrl.trim() === '' ? " (empty: the old default https://api-e.ecoflow.com, paku's eu)" : ''}.`,
        ),
        set('PAKU_ECOFLOW_API_URL', ecoflowRegion(apiUrl)),
      )
    }
    if (interval !== undefined) {
      b.push(
        comment(
          "From REST_API_INTERVAL: the old collector's wait after each poll (only the development compose file passed",
        ),
        comment('it; production polled every 30 s).'),
        set('PAKU_ECOFLOW_POLL_SECONDS', interval.trim()),
      )
    }
  }

  // A paku variable already in the old file is kept, and wins over one derived above.
  const own = [...vars.keys()].filter((n) => PAKU_NAMES.has(n))
  if (own.length > 0) {
    for (const b of blocks) {
      for (let i = 0; i < b.length; i++) {
        const l = b[i] as OutLine
        if ('name' in l && own.includes(l.name))
          b[i] = comment(`${l.name} is set in the old file itself: that value is used (below).`)
      }
    }
    block(
      comment("Already paku's own variables in the old file."),
      ...own.map((n) => set(n, (vars.get(n) as OldVar).value)),
    )
    for (const n of own) used.add(n)
  }

  const notCarried = NOT_CARRIED.map((x) => ({
    names: present([...x.names]),
    reason: x.reason,
  })).filter((x) => x.names.length > 0)
  for (const x of notCarried) for (const n of x.names) used.add(n)
  const unknown = [...vars.keys()].filter((n) => !used.has(n))
  const warnings = blocks.flat().flatMap((l) => ('warning' in l ? [l.warning] : []))
  const result: ImportResult = { blocks, notCarried, unknown, warnings, problems, configIssues: [] }
  const checked = loadConfig({ env: producedEnv(result) })
  if (!checked.ok) result.configIssues = checked.issues
  return result
}

/** `https://{domain}/ota` from the old Caddy site address, or undefined when it names no host (`:80`, empty, several). */
export function derivePublicUrl(domain: string): string | undefined {
  const d = domain.trim().replace(/\/+$/, '')
  const withScheme = /^(https?):\/\/([A-Za-z0-9.-]+(?::\d{1,5})?)$/.exec(d)
  if (withScheme) return `${withScheme[1]}://${withScheme[2]}/ota`
  if (/^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$/.test(d)) return `https://${d}/ota`
  return undefined
}

/** paku's name for an EcoFlow API host (`eu`, `us`, `global`), or the URL itself for another one. */
export function ecoflowRegion(url: string): string {
  const u = url.trim().replace(/\/+$/, '')
  if (u === '') return 'eu'
  const host = /^https?:\/\/([^/:]+)$/i.exec(u)?.[1]?.toLowerCase()
  return (host && ECOFLOW_REGIONS[host]) ?? u
}

/** The produced variables as an environment (real values), e.g. for loadConfig. */
export function producedEnv(r: Pick<ImportResult, 'blocks'>): Record<string, string> {
  return Object.fromEntries(
    r.blocks.flat().flatMap((l) => ('name' in l ? [[l.name, l.value]] : [])),
  )
}

/**
 * The new env file: for a systemd EnvironmentFile, and for `set -a; . FILE` in a shell, so values are
 * quoted for both (neither expands anything inside single quotes; in double quotes both take `\"`,
 * `\\`, `\$` and `` \` ``, and only a shell would expand). Secrets are `***` unless `showSecrets`; a
 * secret URL keeps everything but its password. Comments name old variables, never their secret values.
 */
export function renderEnvFile(
  r: ImportResult,
  opts: { source: string; showSecrets: boolean },
): string {
  const out: string[] = [
    `# paku's configuration from ${oneLine(opts.source)}, the old Docker Compose stack's .env (paku import-env).`,
    '# For /etc/paku/paku.env (systemd EnvironmentFile, mode 0600); every variable: docs/configuration.md.',
  ]
  if (!opts.showSecrets)
    out.push('# Secrets are shown as ***: --write FILE writes the real values.')
  if (r.configIssues.length > 0) {
    out.push('# paku refuses to start with this file until these are fixed:')
    for (const issue of r.configIssues) out.push(`#   ${oneLine(issue)}`)
  }
  for (const b of r.blocks) {
    out.push('')
    for (const l of b) {
      if ('comment' in l) out.push(`# ${l.comment}`)
      else if ('warning' in l) out.push(`# WARNING: ${oneLine(l.warning)}`)
      else if ('example' in l) out.push(`# ${l.example}=${quoteEnvValue(l.value)}`)
      else
        out.push(
          `${l.name}=${opts.showSecrets || !SECRET_NAMES.has(l.name) ? quoteEnvValue(l.value) : maskValue(l.value)}`,
        )
    }
  }
  if (r.notCarried.length > 0 || r.unknown.length > 0) {
    out.push('', '# Not carried over:')
    for (const x of r.notCarried) out.push(`# ${x.names.join(', ')}: ${x.reason}.`)
    if (r.unknown.length > 0)
      out.push(`# Not used by paku (nor documented by the old stack): ${r.unknown.join(', ')}.`)
  }
  return out.join('\n') + '\n'
}

function maskValue(value: string): string {
  if (value === '') return ''
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? maskUrl(value) : '***'
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ')
}

/** A value as systemd's EnvironmentFile and a POSIX shell both read it back unchanged. */
export function quoteEnvValue(value: string): string {
  if (/^[\w@%+=:,./-]*$/.test(value)) return value
  if (!value.includes("'")) return `'${value}'`
  return `"${value.replace(/[\\"$`]/g, (c) => `\\${c}`)}"`
}

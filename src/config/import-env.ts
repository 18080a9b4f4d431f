import { ENV_TABLE } from './env.js'
import { parseComposeEnv, type LineProblem, type OldVar } from './compose-env.js'
import { loadConfig, maskUrl } from './load.js'

export { parseComposeEnv, type LineProblem, type OldVar } from './compose-env.js'

/**
 * `paku import-env`: the old Docker Compose stack's `compose/.env` as paku's PAKU_* variables.
 * Pure functions: parse the old file the way Docker Compose does, map it, render the new file.
 * The old variables, their defaults and users: docs/compatibility.md, "Configuration".
 */

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

/** The old file as importEnv's sections read it, and the new file's blocks they add to. */
type OldFile = {
  /** The value of an old variable (undefined when absent), marking it as taken care of. */
  get: (name: string) => string | undefined
  /** Those of `names` that the old file sets. */
  present: (names: string[]) => string[]
  /** Adds a block of lines to the new file and returns it, for more lines. */
  block: (...lines: OutLine[]) => Block
}

/** Maps the text of an old `compose/.env` to paku's variables; never throws. */
export function importEnv(text: string): ImportResult {
  const { vars, problems } = parseComposeEnv(text)
  const used = new Set<string>()
  const blocks: Block[] = []
  const old: OldFile = {
    get: (name) => {
      used.add(name)
      return vars.get(name)?.value
    },
    present: (names) => names.filter((n) => vars.has(n)),
    block: (...lines) => {
      blocks.push(lines)
      return lines
    },
  }
  const { present, block } = old
  databaseSection(old)
  mqttCredentialSection(old)
  mqttTlsSection(old)
  adminKeySection(old)
  publicUrlSection(old)
  firmwareSection(old)
  ecoflowSection(old)

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

/** PAKU_DATABASE_URL from the old POSTGRES_* and PG* variables, or a note that paku runs its embedded PostgreSQL. */
function databaseSection(old: OldFile): void {
  const { get, present, block } = old
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
}

/** The devices' shared MQTT user and password. */
function mqttCredentialSection(old: OldFile): void {
  const { get, present, block } = old
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
}

/** Where the old broker's certificate is, for MQTT over TLS. */
function mqttTlsSection(old: OldFile): void {
  const { get, block } = old
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
}

/** The admin API key CI uploads firmware with. */
function adminKeySection(old: OldFile): void {
  const { get, block } = old
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
}

/** PAKU_PUBLIC_URL, derived from the old Caddy's site address. */
function publicUrlSection(old: OldFile): void {
  const { get, block } = old
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
}

/** Where the old OTA service's firmware is, for paku to import or read. */
function firmwareSection(old: OldFile): void {
  const { get, block } = old
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
}

/** The EcoFlow keys, device and API host. */
function ecoflowSection(old: OldFile): void {
  const { get, present, block } = old
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

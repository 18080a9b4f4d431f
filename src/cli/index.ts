import { randomBytes } from 'node:crypto'
import { closeSync, fchmodSync, openSync, readFileSync, writeSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { createApp } from '../app.js'
import { commandHelp, overview } from './help.js'
import { exportGrafana, migrationFiles, versionInfo } from '../assets.js'
import { importEnv, loadConfig, maskSecrets, renderEnvFile, type Config } from '../config/index.js'
import {
  addCredential,
  listCredentials,
  removeCredential,
  ROLES,
  USERNAME,
  type Role,
} from '../broker/credentials.js'
import { createDatabase, type Database } from '../db/index.js'
import { createKey, KEY_NAME, listKeys, revokeKey, SCOPES, type Scope } from '../http/index.js'
import { importFirmwareDir } from '../ota/index.js'
import { healthUrl, installService, runCommand, waitReady } from './service.js'
import { createLogger, errorText } from '../log/index.js'

/** The longest a graceful stop may take before serve gives up and exits non-zero. */
const STOP_DEADLINE_MS = 15_000

/** What the CLI needs from the process; main.ts passes the real one, tests a recording one. */
export type CliIo = {
  env: Record<string, string | undefined>
  out: (line: string) => void
  err: (line: string) => void
  /** Resolves with the signal name when the process is asked to stop (SIGINT/SIGTERM). */
  waitForStop: () => Promise<string>
  /** Whether stdout is a terminal (pretty logs). */
  isTTY: boolean
  /** Registers what to do on SIGHUP (reload TLS certificates). */
  onReload?: (fn: () => void) => void
}

export const HELP = overview()

export const EMULATE_HELP = commandHelp('emulate') as string

/** Runs one command; returns the exit code. Never calls process.exit. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        'help-emulate': { type: 'boolean' },
        url: { type: 'string' },
        site: { type: 'string' },
        device: { type: 'string' },
        legacy: { type: 'boolean' },
        interval: { type: 'string' },
        count: { type: 'string' },
        username: { type: 'string' },
        password: { type: 'string' },
        role: { type: 'string' },
        scopes: { type: 'string' },
        user: { type: 'string' },
        bin: { type: 'string' },
        root: { type: 'string' },
        'dry-run': { type: 'boolean' },
        'no-legacy': { type: 'boolean' },
        timeout: { type: 'string' },
        write: { type: 'string' },
        force: { type: 'boolean' },
        'show-secrets': { type: 'boolean' },
      },
    })
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${HELP}`)
    return 2
  }
  const { values, positionals } = parsed
  const command = positionals[0] ?? 'serve'
  if (values.help || command === 'help') {
    // `paku CMD --help`, `paku help CMD`, `paku --help`
    const about = commandHelp(
      command === 'help' ? (positionals[1] ?? '') : positionals.length > 0 ? command : '',
    )
    io.out(about ?? HELP)
    return 0
  }
  if (values['help-emulate']) {
    io.out(EMULATE_HELP)
    return 0
  }
  if (command === 'grafana')
    return grafanaCommand(positionals.slice(1), { legacy: !values['no-legacy'] }, io)
  if (command === 'import-env') return importEnvCommand(positionals.slice(1), values, io)
  if (command === 'install-service') return installServiceCommand(values, io)
  if (command === 'version') {
    const v = versionInfo(io.env)
    io.out(`paku ${v.version} (${v.commit}) node ${process.version}`)
    return 0
  }
  if (
    ![
      'serve',
      'migrate',
      'check-config',
      'emulate',
      'device',
      'key',
      'firmware',
      'wait-ready',
    ].includes(command)
  ) {
    io.err(`unknown command ${JSON.stringify(command)}\n\n${HELP}`)
    return 2
  }

  const loaded = loadConfig({ path: values.config, env: io.env, defaultPath: 'paku.config.json' })
  if (!loaded.ok) {
    io.err(`invalid configuration${loaded.path ? ` (${loaded.path})` : ''}:`)
    for (const line of loaded.issues) io.err(`  ${line}`)
    io.err('every key and variable: docs/configuration.md')
    return 1
  }
  const config = loaded.config

  switch (command) {
    case 'check-config':
      io.out(JSON.stringify(maskSecrets(config), null, 2))
      io.out(`config ok${loaded.path ? ` (${loaded.path})` : ' (defaults)'}`)
      return 0
    case 'migrate':
      return migrateCommand(config, io)
    case 'emulate':
      return emulateCommand({ config, values, io }, positionals[1])
    case 'device':
      return deviceCommand({ config, values, io }, positionals.slice(1))
    case 'key':
      return keyCommand({ config, values, io }, positionals.slice(1))
    case 'firmware':
      return firmwareCommand(config, positionals.slice(1), io)
    case 'wait-ready':
      return waitReadyCommand(config, values.timeout, io)
    default:
      return serveCommand(config, loaded.path, io)
  }
}

/** parseArgs' option values. */
type Values = Record<string, string | boolean | undefined>

/** What a command that reads the configuration runs with. */
type Context = { config: Config; values: Values; io: CliIo }

function logger(config: Config, io: CliIo) {
  return createLogger({
    level: config.log.level,
    format: config.log.format,
    levels: config.log.levels,
    isTTY: io.isTTY,
    write: io.out,
  })
}

async function serveCommand(config: Config, path: string | undefined, io: CliIo): Promise<number> {
  const log = logger(config, io)
  const { version, commit } = versionInfo()
  const app = createApp({ config, log, migrations: migrationFiles(), version })
  try {
    await app.start()
  } catch (err) {
    log.error('startup failed', { err: errorText(err) })
    return 1
  }
  const { mqtt, ws } = app.broker.addresses()
  const http = app.http.address()
  log.info(`paku ${version} (${commit}) ready`, {
    config: path ?? '(defaults)',
    mqtt: mqtt ? `mqtt://${mqtt.address}:${mqtt.port}` : undefined,
    ws: ws ? `ws://${ws.address}:${ws.port}${config.mqtt.ws.path}` : undefined,
    http: http ? `http://${http.address}:${http.port}/health` : undefined,
    database: app.db.describe(),
    migrationsApplied: app.db.applied.length,
    // From process start, and from the database's first answer (migrations, broker, HTTP): the start-up
    // figures `npm run smoke` reports.
    startupMs: Math.round(performance.now()),
    readyAfterDatabaseMs:
      app.db.answeredAt === undefined
        ? undefined
        : Math.round(performance.now() - app.db.answeredAt),
  })
  io.onReload?.(() => {
    try {
      app.broker.reloadTls()
    } catch (err) {
      log.error('reload failed; keeping the current certificates', { err: errorText(err) })
    }
  })
  const signal = await io.waitForStop()
  log.info('stopping', { signal })
  const t0 = Date.now()
  // Bounded: a stop that hangs (a wedged socket, a database that never answers) must not keep
  // systemd waiting; what could not be written by then is in the spool or reported.
  let deadline: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      app.stop(),
      new Promise((_, reject) => {
        deadline = setTimeout(
          () => reject(new Error(`stop took longer than ${STOP_DEADLINE_MS} ms`)),
          STOP_DEADLINE_MS,
        )
      }),
    ])
  } catch (err) {
    log.error('stopped with errors', { err: errorText(err) })
    return 1
  } finally {
    clearTimeout(deadline)
  }
  log.info('stopped', { ms: Date.now() - t0, written: app.ingest.stats().written })
  return 0
}

async function migrateCommand(config: Config, io: CliIo): Promise<number> {
  // `paku migrate` before a cut-over builds the big tables' indexes too, and waits for them.
  return withDatabase({ config, io, what: 'migrate', indexes: 'wait' }, async (db) => {
    io.out(
      db.applied.length === 0
        ? 'no pending migrations'
        : db.applied.map((n) => `applied ${n}`).join('\n'),
    )
    return 0
  })
}

/**
 * Runs a command against the configured database (migrations applied), always closing it;
 * a failure prints `WHAT failed: …` (or `describe(err)`) and returns 1.
 */
async function withDatabase(
  run: {
    config: Config
    io: CliIo
    what: string
    describe?: (err: unknown) => string | undefined
    /** Whether to build the big tables' indexes and wait for them (db/indexes.ts). Default: skip. */
    indexes?: 'wait' | 'skip'
  },
  fn: (db: Database) => Promise<number>,
): Promise<number> {
  const { config, io, what, describe, indexes = 'skip' } = run
  const log = logger(config, io)
  const db = createDatabase({
    config: config.database,
    dataDir: config.dataDir,
    log: log.child('db'),
    migrations: migrationFiles(),
    indexes,
  })
  try {
    await db.start()
    return await fn(db)
  } catch (err) {
    io.err(describe?.(err) ?? `${what} failed: ${errorText(err)}`)
    return 1
  } finally {
    await db.stop().catch(() => undefined)
  }
}

/**
 * `paku grafana export DIR [--no-legacy]`: the provisioning tree paku carries, for a Grafana install;
 * --no-legacy leaves out (and removes from DIR) the "EcoFlow — Legacy" folder.
 */
function grafanaCommand(args: string[], opts: { legacy: boolean }, io: CliIo): number {
  const [action, dir] = args
  if (action !== 'export' || !dir) {
    io.err('usage: paku grafana export DIR [--no-legacy]   (e.g. /etc/grafana/provisioning)')
    return 2
  }
  let removed: string[]
  try {
    removed = exportGrafana(dir, opts)
  } catch (err) {
    io.err(`grafana export failed: ${errorText(err)}`)
    return 1
  }
  for (const rel of removed) io.out(`removed ${rel} (--no-legacy)`)
  const legacy = opts.legacy ? ', the EcoFlow — Legacy folder' : ''
  io.out(
    `wrote the Grafana provisioning files to ${dir} (datasources/, dashboards/${legacy}); see docs/grafana.md`,
  )
  return 0
}

/**
 * `paku import-env OLD_ENV`: the old stack's compose/.env as a paku env file, secrets masked on the
 * terminal unless --show-secrets; --write FILE puts the real values into FILE (mode 0600, an existing
 * one only with --force). Exits 1 when the file cannot be read, a line of it was skipped, or paku would
 * refuse the result (the output is still printed and written); 2 on usage errors.
 */
function importEnvCommand(args: string[], values: Values, io: CliIo): number {
  const [file, ...extra] = args
  const write = typeof values.write === 'string' ? values.write : undefined
  if (!file || extra.length > 0 || write === '' || (values.force && write === undefined)) {
    io.err(
      'usage: paku import-env OLD_ENV_FILE [--write FILE [--force]] [--show-secrets]   (e.g. compose/.env)',
    )
    return 2
  }
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    io.err(
      `import-env: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? errorText(err)})`,
    )
    return 1
  }
  const r = importEnv(text)
  for (const p of r.problems) io.err(`${file}:${p.line}: ${p.message}`)
  for (const w of r.warnings) io.err(`warning: ${w}`)
  for (const i of r.configIssues) io.err(`paku would refuse this configuration: ${i}`)
  if (write !== undefined) {
    try {
      // Created 0600 (exclusive unless --force), and narrowed before any secret is written to it.
      const fd = openSync(write, values.force ? 'w' : 'wx', 0o600)
      try {
        fchmodSync(fd, 0o600)
        writeSync(fd, renderEnvFile(r, { source: file, showSecrets: true }))
      } finally {
        closeSync(fd)
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      io.err(
        code === 'EEXIST'
          ? `import-env: ${write} exists; --force replaces it`
          : `import-env: cannot write ${write} (${code ?? errorText(err)})`,
      )
      return 1
    }
  }
  io.out(renderEnvFile(r, { source: file, showSecrets: values['show-secrets'] === true }).trimEnd())
  if (write !== undefined) io.out(`written to ${write} (mode 0600)`)
  return r.problems.some((p) => p.skipped) || r.configIssues.length > 0 ? 1 : 0
}

/** `paku install-service`: the executable, a system user, the hardened unit, a closed config; prints each step. */
function installServiceCommand(values: Values, io: CliIo): number {
  const user = typeof values.user === 'string' ? values.user : 'paku'
  const bin = typeof values.bin === 'string' ? values.bin : '/usr/local/bin/paku'
  const root = typeof values.root === 'string' ? values.root : '/'
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user)) {
    io.err('--user must be a system user name (a-z, 0-9, _ -)')
    return 2
  }
  if (!bin.startsWith('/')) {
    io.err('--bin must be an absolute path')
    return 2
  }
  if (root === '/' && !values['dry-run'] && process.getuid?.() !== 0) {
    io.err(
      'install-service writes to /etc and /usr/local/bin: run it as root (or --dry-run to see what it would do)',
    )
    return 1
  }
  try {
    const did = installService({
      root,
      bin,
      user,
      execPath: process.execPath,
      dryRun: values['dry-run'] === true,
      run: runCommand,
    })
    for (const line of did) io.out(`${values['dry-run'] ? 'would: ' : ''}${line}`)
  } catch (err) {
    io.err(`install-service failed: ${errorText(err)}`)
    return 1
  }
  io.out(
    'next: set PAKU_DATABASE_URL (and the other secrets) in /etc/paku/paku.env, then: systemctl enable --now paku; journalctl -u paku -f',
  )
  return 0
}

/** `paku wait-ready`: exits 0 once paku answers /health (ExecStartPost of the unit), 1 on timeout. */
async function waitReadyCommand(
  config: Config,
  timeout: string | boolean | undefined,
  io: CliIo,
): Promise<number> {
  const seconds = timeout === undefined ? 60 : Number(timeout)
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) {
    io.err('--timeout must be seconds between 1 and 3600')
    return 2
  }
  const r = await waitReady(healthUrl(config), seconds * 1000)
  if (!r.ok) {
    io.err(r.error)
    return 1
  }
  io.out(`paku ready (${r.status}) after ${r.ms} ms`)
  return 0
}

/** `paku firmware import DIR`: the old firmware volume into the database, checked against the recorded SHA-256. */
async function firmwareCommand(config: Config, args: string[], io: CliIo): Promise<number> {
  const [action, dir] = args
  if (action !== 'import' || !dir) {
    io.err(
      "usage: paku firmware import DIR   (the old OTA service's FIRMWARE_STORAGE_PATH, e.g. the paku_firmware volume)",
    )
    return 2
  }
  return withDatabase({ config, io, what: 'firmware import' }, async (db) => {
    const r = await importFirmwareDir(db.db, dir)
    for (const x of r.imported) io.out(`imported ${x}`)
    for (const x of r.missing) io.err(`missing ${x}`)
    for (const x of r.mismatched) io.err(`checksum mismatch, not imported: ${x}`)
    io.out(
      `${r.imported.length} imported, ${r.missing.length} missing, ${r.mismatched.length} mismatched`,
    )
    return r.mismatched.length > 0 ? 1 : 0
  })
}

/** `paku key create|list|revoke`: named admin API keys with scopes; a key is shown once. */
async function keyCommand({ config, values, io }: Context, args: string[]): Promise<number> {
  const [action, name] = args
  if (action !== 'create' && action !== 'list' && action !== 'revoke') {
    io.err(
      'usage: paku key create NAME --scopes read,upload,rollout,ingest,command,admin | key list | key revoke NAME',
    )
    return 2
  }
  if (action !== 'list' && (!name || !KEY_NAME.test(name))) {
    io.err('key name must be 1–64 characters of a-z 0-9 _ . - (e.g. firmware-ci)')
    return 2
  }
  const scopes = String(values.scopes ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)
  if (
    action === 'create' &&
    (scopes.length === 0 || scopes.some((x) => !(SCOPES as readonly string[]).includes(x)))
  ) {
    io.err(`--scopes must be a comma-separated list of ${SCOPES.join(', ')}`)
    return 2
  }
  const duplicate = (err: unknown) =>
    (err as { code?: string }).code === '23505'
      ? `a key named ${name} exists already (revoke it or choose another name)`
      : undefined
  return withDatabase({ config, io, what: `key ${action}`, describe: duplicate }, async (db) => {
    if (action === 'list') {
      const rows = await listKeys(db.db)
      if (rows.length === 0) io.out('no admin keys')
      for (const k of rows) {
        io.out(
          `${k.name}\t${k.scopes.join(',')}\tcreated ${k.created_at.toISOString()}\tlast used ${k.last_used_at?.toISOString() ?? 'never'}${k.revoked_at ? `\trevoked ${k.revoked_at.toISOString()}` : ''}`,
        )
      }
      return 0
    }
    if (action === 'revoke') {
      if (!(await revokeKey(db.db, name as string))) {
        io.err(`no active key named ${name}`)
        return 1
      }
      io.out(`revoked ${name}`)
      return 0
    }
    const key = await createKey(db.db, name as string, scopes as Scope[])
    io.out(`created ${name} (${scopes.join(',')}); key (shown once): ${key}`)
    return 0
  })
}

/** `paku device add|list|remove`: per-device MQTT credentials, stored as scrypt hashes. */
async function deviceCommand({ config, values, io }: Context, args: string[]): Promise<number> {
  const [action, id] = args
  const role = (values.role as string | undefined) ?? 'device'
  if (action !== 'add' && action !== 'list' && action !== 'remove') {
    io.err(
      'usage: paku device add ID [--password P] [--role device|bridge|service] | device list | device remove ID',
    )
    return 2
  }
  if (action !== 'list' && (!id || !USERNAME.test(id))) {
    io.err('device id must be 1–128 characters of A-Z a-z 0-9 _ . : - (e.g. ESP32-AABBCCDD)')
    return 2
  }
  if (!(ROLES as readonly string[]).includes(role)) {
    io.err(`--role must be one of ${ROLES.join(', ')}`)
    return 2
  }
  const given = typeof values.password === 'string' ? values.password : undefined
  if (given !== undefined && given.length < 8) {
    io.err('--password must be at least 8 characters')
    return 2
  }
  return withDatabase({ config, io, what: `device ${action}` }, async (db) => {
    if (action === 'list') {
      const rows = await listCredentials(db.db)
      if (rows.length === 0) io.out('no MQTT credentials')
      for (const r of rows)
        io.out(
          `${r.username}\t${r.role}\tcreated ${r.created_at.toISOString()}\tlast used ${r.last_used_at?.toISOString() ?? 'never'}`,
        )
      return 0
    }
    if (action === 'remove') {
      if (!(await removeCredential(db.db, id as string))) {
        io.err(`no credential for ${id}`)
        return 1
      }
      io.out(`removed ${id}`)
      return 0
    }
    const password = given ?? randomBytes(18).toString('base64url')
    await addCredential(db.db, { username: id as string, password, role: role as Role })
    // A generated password is shown once; a given one is never echoed.
    io.out(
      given === undefined
        ? `added ${id} (${role}); password: ${password}`
        : `added ${id} (${role})`,
    )
    return 0
  })
}

async function emulateCommand(
  { config, values, io }: Context,
  kind: string | undefined,
): Promise<number> {
  if (kind !== 'ruuvi' && kind !== 'heater') {
    io.err(`emulate needs ruuvi or heater\n\n${EMULATE_HELP}`)
    return 2
  }
  const num = (name: string, fallback: number) => {
    const raw = values[name]
    if (typeof raw !== 'string') return fallback
    const n = Number(raw)
    return Number.isFinite(n) && n >= 0 ? n : Number.NaN
  }
  const interval = num('interval', 5)
  const count = num('count', 0)
  if (Number.isNaN(interval) || Number.isNaN(count) || interval <= 0 || !Number.isInteger(count)) {
    io.err('--interval must be a positive number of seconds and --count a whole number')
    return 2
  }
  const host =
    config.mqtt.host === '0.0.0.0' || config.mqtt.host === '::' ? '127.0.0.1' : config.mqtt.host
  const device =
    typeof values.device === 'string'
      ? values.device
      : kind === 'heater'
        ? 'emu01'
        : 'van_inside,cabin'
  const abort = new AbortController()
  void io.waitForStop().then(() => abort.abort())
  try {
    // Loaded on demand: the MQTT client library costs serve ~10 MB of RSS for nothing.
    const { runEmulator } = await import('../emulate/index.js')
    await runEmulator({
      kind,
      url: typeof values.url === 'string' ? values.url : `mqtt://${host}:${config.mqtt.port}`,
      username: values.username as string | undefined,
      password: values.password as string | undefined,
      site: typeof values.site === 'string' ? values.site : 'paku',
      devices: device
        .split(',')
        .map((d) => d.trim())
        .filter(Boolean),
      legacy: values.legacy === true,
      intervalMs: interval * 1000,
      count,
      signal: abort.signal,
      log: (line) => io.out(`[emulate ${kind}] ${line}`),
    })
    return 0
  } catch (err) {
    io.err(`emulate failed: ${errorText(err)}`)
    return 1
  }
}

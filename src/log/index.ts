export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'
export type Fields = Record<string, unknown>

/** One small logging interface; subsystems get a child with their namespace. */
export type Logger = {
  debug(msg: string, fields?: Fields | (() => Fields)): void
  info(msg: string, fields?: Fields): void
  warn(msg: string, fields?: Fields): void
  error(msg: string, fields?: Fields): void
  child(ns: string): Logger
  enabled(level: LogLevel): boolean
}

export type LoggerOptions = {
  level: LogLevel
  format: 'auto' | 'json' | 'pretty'
  /** Per-namespace level overrides, e.g. { ingest: 'debug' }. */
  levels?: Readonly<Record<string, LogLevel>>
  /** Where lines go; defaults to process.stdout. */
  write?: (line: string) => void
  isTTY?: boolean
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 }
const COLOR: Record<string, string> = {
  debug: '\x1b[90m',
  info: '\x1b[36m',
  warn: '\x1b[33m',
  error: '\x1b[31m',
}

/**
 * JSON lines when stdout is not a terminal (systemd's journal, CI), short coloured lines otherwise.
 * Expensive debug fields can be passed as a function so they are built only when debug is on.
 */
export function createLogger(opts: LoggerOptions, ns = 'paku'): Logger {
  const write = opts.write ?? ((line: string) => process.stdout.write(line + '\n'))
  const pretty =
    opts.format === 'pretty' ||
    (opts.format === 'auto' && (opts.isTTY ?? process.stdout.isTTY === true))
  const threshold = RANK[opts.levels?.[ns] ?? opts.level]

  const emit = (
    level: Exclude<LogLevel, 'silent'>,
    msg: string,
    fields?: Fields | (() => Fields),
  ) => {
    if (RANK[level] < threshold) return
    const f = typeof fields === 'function' ? fields() : fields
    if (pretty) {
      const time = new Date().toISOString().slice(11, 23)
      const extra = f && Object.keys(f).length > 0 ? ' ' + formatFields(f) : ''
      write(`${time} ${COLOR[level]}${level.padEnd(5)}\x1b[0m [${ns}] ${msg}${extra}`)
    } else {
      write(JSON.stringify({ time: new Date().toISOString(), level, ns, msg, ...serialize(f) }))
    }
  }

  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (child) => createLogger(opts, child),
    enabled: (level) => RANK[level] >= threshold,
  }
}

function serialize(fields: Fields | undefined): Fields {
  if (!fields) return {}
  const out: Fields = {}
  for (const [k, v] of Object.entries(fields)) out[k] = v instanceof Error ? errorText(v) : v
  return out
}

function formatFields(fields: Fields): string {
  return Object.entries(serialize(fields))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ')
}

/** An error's message plus its causes, one line; stack traces only at the boundaries that log them. */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  let text = err.message || err.name
  if (err instanceof AggregateError) text += ': ' + err.errors.map(errorText).join('; ')
  const cause = (err as { cause?: unknown }).cause
  if (cause !== undefined) text += ` (cause: ${errorText(cause)})`
  return text
}

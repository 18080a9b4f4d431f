/** How an environment variable's text becomes a config value; returns an error message instead on bad input. */
type EnvParser = (raw: string) => { value: unknown } | { error: string }

const asString: EnvParser = (raw) => ({ value: raw })

const asInt: EnvParser = (raw) =>
  /^-?\d+$/.test(raw.trim())
    ? { value: Number.parseInt(raw.trim(), 10) }
    : { error: `expected an integer, got ${JSON.stringify(raw)}` }

const asBool: EnvParser = (raw) => {
  const s = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(s)) return { value: true }
  if (['0', 'false', 'no', 'off'].includes(s)) return { value: false }
  return { error: `expected true or false, got ${JSON.stringify(raw)}` }
}

/** A secret is never echoed back in an error message. */
const asSecret: EnvParser = (raw) => ({ value: raw })

/** Comma-separated list; blanks dropped. */
const asList: EnvParser = (raw) => ({
  value: raw
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean),
})

export type EnvEntry = {
  name: string
  path: readonly string[]
  parse: EnvParser
  secret?: boolean
  description: string
}

/**
 * The one explicit table of PAKU_* overrides, so grep finds every variable here; docs/configuration.md
 * lists each with its key (src/config/config.test.ts compares them).
 */
export const ENV_TABLE: readonly EnvEntry[] = [
  {
    name: 'PAKU_DATA_DIR',
    path: ['dataDir'],
    parse: asString,
    description: 'local state directory (embedded PostgreSQL)',
  },
  {
    name: 'PAKU_LOG_LEVEL',
    path: ['log', 'level'],
    parse: asString,
    description: 'debug | info | warn | error | silent',
  },
  {
    name: 'PAKU_LOG_FORMAT',
    path: ['log', 'format'],
    parse: asString,
    description: 'auto | json | pretty',
  },
  {
    name: 'PAKU_DATABASE_URL',
    path: ['database', 'url'],
    parse: asSecret,
    secret: true,
    description: 'postgres:// URL; empty = embedded PostgreSQL',
  },
  {
    name: 'PAKU_DATABASE_POOL_SIZE',
    path: ['database', 'poolSize'],
    parse: asInt,
    description: 'connections in the pool',
  },
  {
    name: 'PAKU_DATABASE_EMBEDDED_PORT',
    path: ['database', 'embedded', 'port'],
    parse: asInt,
    description: 'port of the embedded PostgreSQL (127.0.0.1)',
  },
  {
    name: 'PAKU_MQTT_HOST',
    path: ['mqtt', 'host'],
    parse: asString,
    description: 'MQTT TCP listen address',
  },
  {
    name: 'PAKU_MQTT_PORT',
    path: ['mqtt', 'port'],
    parse: asInt,
    description: 'MQTT TCP port (0 = any free port)',
  },
  {
    name: 'PAKU_MQTT_ANONYMOUS',
    path: ['mqtt', 'allowAnonymous'],
    parse: asBool,
    description: 'accept MQTT clients without credentials',
  },
  {
    name: 'PAKU_MQTT_WS_ANONYMOUS',
    path: ['mqtt', 'ws', 'allowAnonymous'],
    parse: asBool,
    description: 'anonymous clients on MQTT over WebSocket (default: as PAKU_MQTT_ANONYMOUS)',
  },
  {
    name: 'PAKU_MQTT_TLS_ANONYMOUS',
    path: ['mqtt', 'tls', 'allowAnonymous'],
    parse: asBool,
    description: 'anonymous clients on the TLS listeners (default: as PAKU_MQTT_ANONYMOUS)',
  },
  {
    name: 'PAKU_MQTT_ANONYMOUS_ROLE',
    path: ['mqtt', 'anonymousRole'],
    parse: asString,
    description: 'readonly | device | full: what anonymous clients may do',
  },
  {
    name: 'PAKU_MQTT_USERNAME',
    path: ['mqtt', 'sharedCredential', 'username'],
    parse: asString,
    description: 'shared legacy MQTT username (the old MQTT_USER)',
  },
  {
    name: 'PAKU_MQTT_PASSWORD',
    path: ['mqtt', 'sharedCredential', 'password'],
    parse: asSecret,
    secret: true,
    description: 'shared legacy MQTT password (the old MQTT_PASSWORD)',
  },
  {
    name: 'PAKU_MQTT_SHARED_ROLE',
    path: ['mqtt', 'sharedCredential', 'role'],
    parse: asString,
    description: 'full | device: rights of the shared credential',
  },
  {
    name: 'PAKU_MQTT_SESSION_EXPIRY_HOURS',
    path: ['mqtt', 'sessionExpiryHours'],
    parse: asInt,
    description: 'hours an absent persistent session is kept',
  },
  {
    name: 'PAKU_MQTT_WS_ALLOWED_ORIGINS',
    path: ['mqtt', 'ws', 'allowedOrigins'],
    parse: asList,
    description: 'browser origins allowed on MQTT over WebSocket, comma-separated',
  },
  {
    name: 'PAKU_MQTT_TLS_ENABLED',
    path: ['mqtt', 'tls', 'enabled'],
    parse: asBool,
    description: 'MQTT over TLS on/off',
  },
  {
    name: 'PAKU_MQTT_TLS_PORT',
    path: ['mqtt', 'tls', 'port'],
    parse: asInt,
    description: 'MQTT over TLS port',
  },
  {
    name: 'PAKU_MQTT_WSS_PORT',
    path: ['mqtt', 'tls', 'wsPort'],
    parse: asInt,
    description: 'MQTT over WebSocket+TLS port',
  },
  {
    name: 'PAKU_MQTT_TLS_CERT_FILE',
    path: ['mqtt', 'tls', 'certFile'],
    parse: asString,
    description: 'server certificate (PEM, chain)',
  },
  {
    name: 'PAKU_MQTT_TLS_KEY_FILE',
    path: ['mqtt', 'tls', 'keyFile'],
    parse: asString,
    description: 'server private key (PEM)',
  },
  {
    name: 'PAKU_MQTT_TLS_CA_FILE',
    path: ['mqtt', 'tls', 'caFile'],
    parse: asString,
    description: 'CA for client certificates (PEM)',
  },
  {
    name: 'PAKU_MQTT_TLS_REQUIRE_CLIENT_CERT',
    path: ['mqtt', 'tls', 'requireClientCert'],
    parse: asBool,
    description: 'require a client certificate',
  },
  {
    name: 'PAKU_MQTT_WS_ENABLED',
    path: ['mqtt', 'ws', 'enabled'],
    parse: asBool,
    description: 'MQTT over WebSocket on/off',
  },
  {
    name: 'PAKU_MQTT_WS_HOST',
    path: ['mqtt', 'ws', 'host'],
    parse: asString,
    description: 'MQTT over WebSocket listen address',
  },
  {
    name: 'PAKU_MQTT_WS_PORT',
    path: ['mqtt', 'ws', 'port'],
    parse: asInt,
    description: 'MQTT over WebSocket port',
  },
  {
    name: 'PAKU_MQTT_MAX_PACKET_BYTES',
    path: ['mqtt', 'maxPacketBytes'],
    parse: asInt,
    description: 'largest MQTT packet; bigger closes the connection',
  },
  {
    name: 'PAKU_HTTP_HOST',
    path: ['http', 'host'],
    parse: asString,
    description: 'HTTP listen address',
  },
  {
    name: 'PAKU_HTTP_PORT',
    path: ['http', 'port'],
    parse: asInt,
    description: 'HTTP port (0 = any free port)',
  },
  {
    name: 'PAKU_INGEST_BATCH_SIZE',
    path: ['ingest', 'batchSize'],
    parse: asInt,
    description: 'rows per database write',
  },
  {
    name: 'PAKU_INGEST_FLUSH_INTERVAL_MS',
    path: ['ingest', 'flushIntervalMs'],
    parse: asInt,
    description: 'longest wait before a partial batch is written',
  },
  {
    name: 'PAKU_INGEST_COMMIT_WINDOW_MS',
    path: ['ingest', 'commitWindowMs'],
    parse: asInt,
    description: 'longest wait of a QoS 1/2 message for others to share its commit',
  },
  {
    name: 'PAKU_INGEST_CONCURRENT_WRITES',
    path: ['ingest', 'concurrentWrites'],
    parse: asInt,
    description: 'telemetry batches written at the same time (database connections)',
  },
  {
    name: 'PAKU_INGEST_MAX_PAYLOAD_BYTES',
    path: ['ingest', 'maxPayloadBytes'],
    parse: asInt,
    description: 'larger payloads go to ingest_rejects',
  },
  // The old stack's OTA_API_KEY under paku's prefix: the same admin key. PAKU_ADMIN_API_KEY, later in the table, wins when both are set.
  {
    name: 'PAKU_OTA_API_KEY',
    path: ['http', 'adminApiKey'],
    parse: asSecret,
    secret: true,
    description: 'alias of PAKU_ADMIN_API_KEY (the old OTA_API_KEY)',
  },
  {
    name: 'PAKU_ADMIN_API_KEY',
    path: ['http', 'adminApiKey'],
    parse: asSecret,
    secret: true,
    description: 'key for /api/admin/*',
  },
  {
    name: 'PAKU_RETENTION_MEASUREMENTS_DAYS',
    path: ['retention', 'measurementsDays'],
    parse: asInt,
    description: 'days of raw telemetry to keep (0 = forever)',
  },
  {
    name: 'PAKU_RETENTION_STATUS_DAYS',
    path: ['retention', 'statusDays'],
    parse: asInt,
    description: 'days of device status rows to keep (0 = forever)',
  },
  {
    name: 'PAKU_RETENTION_ECOFLOW_DAYS',
    path: ['retention', 'ecoflowDays'],
    parse: asInt,
    description: 'days of EcoFlow polls to keep (0 = forever)',
  },
  {
    name: 'PAKU_PUBLIC_URL',
    path: ['ota', 'publicUrl'],
    parse: asString,
    description: 'public base URL for firmware download links',
  },
  {
    name: 'PAKU_OTA_MAX_FIRMWARE_BYTES',
    path: ['ota', 'maxFirmwareBytes'],
    parse: asInt,
    description: 'largest firmware image accepted',
  },
  {
    name: 'PAKU_OTA_FIRMWARE_DIR',
    path: ['ota', 'firmwareDir'],
    parse: asString,
    description: "the old OTA service's firmware directory, read at start",
  },
  {
    name: 'PAKU_ECOFLOW_ACCESS_KEY',
    path: ['ecoflow', 'accessKey'],
    parse: asSecret,
    secret: true,
    description: 'EcoFlow Open API access key',
  },
  {
    name: 'PAKU_ECOFLOW_SECRET_KEY',
    path: ['ecoflow', 'secretKey'],
    parse: asSecret,
    secret: true,
    description: 'EcoFlow Open API secret key',
  },
  {
    name: 'PAKU_ECOFLOW_API_URL',
    path: ['ecoflow', 'apiUrl'],
    parse: asString,
    description: 'eu | us | global | base URL',
  },
  {
    name: 'PAKU_ECOFLOW_DEVICES',
    path: ['ecoflow', 'devices'],
    parse: asList,
    description: 'serial numbers, comma-separated; empty = all',
  },
  {
    name: 'PAKU_ECOFLOW_POLL_SECONDS',
    path: ['ecoflow', 'pollSeconds'],
    parse: asInt,
    description: 'seconds between polls',
  },
  {
    name: 'PAKU_ECOFLOW_SIGNING',
    path: ['ecoflow', 'signing'],
    parse: asString,
    description: 'auto | documented | legacy',
  },
  {
    name: 'PAKU_CLUSTER_REDIS_URL',
    path: ['cluster', 'redisUrl'],
    parse: asSecret,
    secret: true,
    description: 'redis:// URL for several instances; empty = one instance',
  },
  {
    name: 'PAKU_CLUSTER_INSTANCE_ID',
    path: ['cluster', 'instanceId'],
    parse: asString,
    description: 'instance name (default hostname-pid)',
  },
  {
    name: 'PAKU_INGEST_SPOOL_MAX_BYTES',
    path: ['ingest', 'spoolMaxBytes'],
    parse: asInt,
    description: 'largest on-disk spool during a database outage',
  },
]

/** Env problems, named after the variable the user actually set. */
export type EnvIssue = { name: string; message: string }

/**
 * Overlays every PAKU_* variable of ENV_TABLE onto a copy of `base`. An empty variable counts as unset,
 * except PAKU_DATABASE_URL where empty explicitly selects the embedded database.
 */
export function applyEnv(
  base: Record<string, unknown>,
  env: Record<string, string | undefined>,
): { value: Record<string, unknown>; issues: EnvIssue[]; sources: Map<string, string> } {
  const value = structuredClone(base)
  const issues: EnvIssue[] = []
  const sources = new Map<string, string>()
  for (const entry of ENV_TABLE) {
    const raw = env[entry.name]
    if (raw === undefined || (raw === '' && entry.name !== 'PAKU_DATABASE_URL')) continue
    const parsed = entry.parse(raw)
    if ('error' in parsed) {
      issues.push({ name: entry.name, message: entry.secret ? 'invalid value' : parsed.error })
      continue
    }
    setPath(value, entry.path, parsed.value)
    sources.set(entry.path.join('.'), entry.name)
  }
  return { value, issues, sources }
}

function setPath(target: Record<string, unknown>, path: readonly string[], leaf: unknown): void {
  let node = target
  for (const key of path.slice(0, -1)) {
    const next = node[key]
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {}
    node = node[key] as Record<string, unknown>
  }
  node[path[path.length - 1] as string] = leaf
}

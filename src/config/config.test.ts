import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { ConfigSchema, ENV_TABLE, loadConfig, maskSecrets, maskUrl } from './index.js'

const files = (map: Record<string, string>) => (p: string) => {
  if (!(p in map)) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' })
  return map[p] as string
}

describe('loadConfig', () => {
  it('parses the committed paku.config.json with the real schema', () => {
    const r = loadConfig({ env: {}, defaultPath: 'paku.config.json' })
    assert.equal(r.ok, true, JSON.stringify(r))
  })

  it('uses all defaults when the default file is missing', () => {
    const r = loadConfig({ env: {}, defaultPath: 'nope.json', readFile: files({}) })
    assert.ok(r.ok)
    assert.equal(r.config.mqtt.port, 1883)
    assert.equal(r.config.http.port, 8080)
    assert.equal(r.config.database.url, '')
    assert.equal(r.config.mqtt.ws.path, '/mqtt')
    assert.equal(r.path, undefined, 'no file was read')
  })

  it('fails when an explicit --config file is missing', () => {
    const r = loadConfig({ path: 'missing.json', env: {}, readFile: files({}) })
    assert.deepEqual(r, {
      ok: false,
      path: 'missing.json',
      issues: ['missing.json: cannot read config file (ENOENT)'],
    })
  })

  it('takes the path from PAKU_CONFIG when --config is absent, and --config wins over it', () => {
    const read = files({ 'a.json': '{"http":{"port":1}}', 'b.json': '{"http":{"port":2}}' })
    const a = loadConfig({ env: { PAKU_CONFIG: 'a.json' }, readFile: read, defaultPath: 'x' })
    const b = loadConfig({ path: 'b.json', env: { PAKU_CONFIG: 'a.json' }, readFile: read })
    assert.ok(a.ok && b.ok)
    assert.equal(a.config.http.port, 1)
    assert.equal(b.config.http.port, 2)
  })

  it('reports JSON syntax errors with the file path', () => {
    const r = loadConfig({ path: 'c.json', env: {}, readFile: files({ 'c.json': '{"http": ' }) })
    assert.equal(r.ok, false)
    assert.match((r as { issues: string[] }).issues[0] as string, /^c\.json: invalid JSON: /)
  })

  it('refuses a config that is not an object', () => {
    const r = loadConfig({ path: 'c.json', env: {}, readFile: files({ 'c.json': '[1]' }) })
    assert.deepEqual((r as { issues: string[] }).issues, ['c.json: config must be a JSON object'])
  })

  it('overlays env over the file', () => {
    const r = loadConfig({
      path: 'c.json',
      env: {
        PAKU_MQTT_PORT: '1884',
        PAKU_HTTP_PORT: '0',
        PAKU_DATA_DIR: '/var/lib/paku',
        PAKU_LOG_LEVEL: 'debug',
        PAKU_MQTT_WS_ENABLED: 'false',
        PAKU_DATABASE_URL: 'postgres://u:p@h/db',
      },
      readFile: files({ 'c.json': '{"mqtt":{"port":1}}' }),
    })
    assert.ok(r.ok)
    assert.equal(r.config.mqtt.port, 1884)
    assert.equal(r.config.http.port, 0)
    assert.equal(r.config.dataDir, '/var/lib/paku')
    assert.equal(r.config.log.level, 'debug')
    assert.equal(r.config.mqtt.ws.enabled, false)
    assert.equal(r.config.database.url, 'postgres://u:p@h/db')
  })

  it('returns a frozen config', () => {
    const r = loadConfig({ env: {}, defaultPath: 'x', readFile: files({}) })
    assert.ok(r.ok)
    assert.throws(() => {
      ;(r.config.mqtt as { port: number }).port = 1
    }, TypeError)
  })

  const bad: Array<{ name: string; file?: string; env?: Record<string, string>; want: string[] }> =
    [
      {
        name: 'names the env variable on a non-integer',
        env: { PAKU_MQTT_PORT: 'abc' },
        want: ['PAKU_MQTT_PORT: expected an integer, got "abc"'],
      },
      {
        name: 'names the env variable on an out-of-range port',
        env: { PAKU_HTTP_PORT: '70000' },
        want: ['http.port (from PAKU_HTTP_PORT): port must be between 0 and 65535'],
      },
      {
        name: 'rejects a bad boolean',
        env: { PAKU_MQTT_WS_ENABLED: 'maybe' },
        want: ['PAKU_MQTT_WS_ENABLED: expected true or false, got "maybe"'],
      },
      {
        name: 'rejects an unknown log level',
        env: { PAKU_LOG_LEVEL: 'loud' },
        want: ['log.level (from PAKU_LOG_LEVEL): must be one of debug, info, warn, error, silent'],
      },
      {
        name: 'rejects unknown keys (typos)',
        file: '{"mqtt":{"prot":1883}}',
        want: ['mqtt.prot: Invalid key: Expected never but received "prot"'],
      },
      {
        name: 'reports every problem, one per line',
        file: '{"mqtt":{"port":-1},"http":{"port":1.5}}',
        want: ['mqtt.port: port must be between 0 and 65535', 'http.port: port must be an integer'],
      },
      {
        name: 'rejects a non-postgres database url without echoing it',
        env: { PAKU_DATABASE_URL: 'mysql://root:hunter2@db/x' },
        want: ['database.url (from PAKU_DATABASE_URL): database.url must be a postgres:// URL'],
      },
      {
        name: 'rejects a database url of the wrong type without echoing it',
        file: '{"database":{"url":12345}}',
        want: ['database.url: database.url must be a postgres:// URL'],
      },
      {
        name: 'rejects a ws path without a slash',
        file: '{"mqtt":{"ws":{"path":"mqtt"}}}',
        want: ['mqtt.ws.path: must start with /'],
      },
      {
        name: 'rejects an EcoFlow host that is neither a region nor a URL',
        env: { PAKU_ECOFLOW_API_URL: 'ftp://x' },
        want: [
          'ecoflow.apiUrl (from PAKU_ECOFLOW_API_URL): must be eu, us, global or an http(s):// URL',
        ],
      },
      {
        name: 'rejects a serial number with odd characters',
        env: { PAKU_ECOFLOW_DEVICES: 'DCABZ8ZE1234567, bad sn!' },
        want: ['ecoflow.devices.1 (from PAKU_ECOFLOW_DEVICES): must be a device serial number'],
      },
      {
        name: 'rejects a poll interval under 5 s',
        env: { PAKU_ECOFLOW_POLL_SECONDS: '1' },
        want: [
          'ecoflow.pollSeconds (from PAKU_ECOFLOW_POLL_SECONDS): pollSeconds must be at least 5',
        ],
      },
      {
        name: 'rejects an unknown signing form',
        env: { PAKU_ECOFLOW_SIGNING: 'md5' },
        want: ['ecoflow.signing (from PAKU_ECOFLOW_SIGNING): must be auto, documented or legacy'],
      },
      {
        name: 'rejects a secret key of the wrong type without echoing it',
        file: '{"ecoflow":{"secretKey":12345}}',
        want: ['ecoflow.secretKey: ecoflow.secretKey must be a string'],
      },
      {
        name: 'rejects a zero batch size',
        env: { PAKU_INGEST_BATCH_SIZE: '0' },
        want: ['ingest.batchSize (from PAKU_INGEST_BATCH_SIZE): batchSize must be at least 1'],
      },
      {
        name: 'rejects a backpressure mark above the in-memory bound',
        file: '{"ingest":{"backpressureRows":500,"maxPendingRows":400}}',
        want: ['ingest: ingest.backpressureRows must not be above ingest.maxPendingRows'],
      },
      {
        name: 'rejects zero concurrent writes',
        env: { PAKU_INGEST_CONCURRENT_WRITES: '0' },
        want: [
          'ingest.concurrentWrites (from PAKU_INGEST_CONCURRENT_WRITES): concurrentWrites must be at least 1',
        ],
      },
      {
        name: 'rejects more concurrent writes than the limit',
        file: '{"ingest":{"concurrentWrites":9}}',
        want: ['ingest.concurrentWrites: concurrentWrites must be at most 8'],
      },
      {
        name: 'rejects concurrent writes that are not a number',
        env: { PAKU_INGEST_CONCURRENT_WRITES: 'two' },
        want: ['PAKU_INGEST_CONCURRENT_WRITES: expected an integer, got "two"'],
      },
      {
        name: 'rejects more concurrent writes than pool connections',
        env: { PAKU_INGEST_CONCURRENT_WRITES: '5', PAKU_DATABASE_POOL_SIZE: '4' },
        want: [
          'ingest.concurrentWrites (from PAKU_INGEST_CONCURRENT_WRITES): concurrentWrites must not be above database.poolSize',
        ],
      },
      {
        name: 'rejects a backpressure mark of zero',
        file: '{"ingest":{"backpressureRows":0}}',
        want: ['ingest.backpressureRows: backpressureRows must be at least 1'],
      },
      {
        name: 'rejects a public URL that is not http(s)',
        env: { PAKU_PUBLIC_URL: 'iot.example.com/ota' },
        want: ['ota.publicUrl (from PAKU_PUBLIC_URL): must be an http(s):// URL without query'],
      },
      {
        name: 'rejects a public URL with a query',
        env: { PAKU_PUBLIC_URL: 'https://x/ota?a=1' },
        want: ['ota.publicUrl (from PAKU_PUBLIC_URL): must be an http(s):// URL without query'],
      },
      {
        name: 'rejects a firmware limit that is not a number',
        env: { PAKU_OTA_MAX_FIRMWARE_BYTES: '16MB' },
        want: ['PAKU_OTA_MAX_FIRMWARE_BYTES: expected an integer, got "16MB"'],
      },
      {
        name: 'rejects negative retention',
        env: { PAKU_RETENTION_MEASUREMENTS_DAYS: '-1' },
        want: [
          'retention.measurementsDays (from PAKU_RETENTION_MEASUREMENTS_DAYS): measurementsDays must be 0 (keep) or more',
        ],
      },
      {
        name: 'rejects retention that is not a number',
        env: { PAKU_RETENTION_STATUS_DAYS: '30d' },
        want: ['PAKU_RETENTION_STATUS_DAYS: expected an integer, got "30d"'],
      },
      {
        name: 'refuses EcoFlow retention shorter than what dashboards read raw',
        env: { PAKU_RETENTION_ECOFLOW_DAYS: '7' },
        want: [
          'retention: retention.ecoflowDays must be 0 or at least 14: dashboards read EcoFlow rows up to 14 days back',
        ],
      },
      {
        name: 'rejects a rollup interval of zero',
        file: '{"rollup":{"intervalSeconds":0}}',
        want: ['rollup.intervalSeconds: intervalSeconds must be at least 1'],
      },
      {
        name: 'rejects a Redis URL of another scheme without echoing it',
        env: { PAKU_CLUSTER_REDIS_URL: 'http://:hunter2@redis:6379' },
        want: [
          'cluster.redisUrl (from PAKU_CLUSTER_REDIS_URL): cluster.redisUrl must be a redis:// or rediss:// URL',
        ],
      },
      {
        name: 'rejects a Redis URL with spaces without echoing it',
        env: { PAKU_CLUSTER_REDIS_URL: 'redis://:hunter2@red is:6379' },
        want: [
          'cluster.redisUrl (from PAKU_CLUSTER_REDIS_URL): cluster.redisUrl must be a redis:// or rediss:// URL',
        ],
      },
      {
        name: 'rejects a Redis URL without a host',
        env: { PAKU_CLUSTER_REDIS_URL: 'redis://' },
        want: [
          'cluster.redisUrl (from PAKU_CLUSTER_REDIS_URL): cluster.redisUrl must be a redis:// or rediss:// URL',
        ],
      },
      {
        name: 'rejects a Redis URL with a path that is not a database number',
        env: { PAKU_CLUSTER_REDIS_URL: 'redis://:hunter2@redis:6379/x?y=1' },
        want: [
          'cluster.redisUrl (from PAKU_CLUSTER_REDIS_URL): cluster.redisUrl must be a redis:// or rediss:// URL',
        ],
      },
      {
        name: 'rejects a Redis URL of the wrong type without echoing it',
        file: '{"cluster":{"redisUrl":12345}}',
        want: ['cluster.redisUrl: cluster.redisUrl must be a redis:// or rediss:// URL'],
      },
      {
        name: 'rejects an instance id with odd characters',
        env: { PAKU_CLUSTER_INSTANCE_ID: 'a b' },
        want: [
          'cluster.instanceId (from PAKU_CLUSTER_INSTANCE_ID): cluster.instanceId must be up to 64 letters, digits, . _ : -',
        ],
      },
      {
        name: 'rejects a route prefix without a slash',
        file: '{"ota":{"routePrefix":"ota"}}',
        want: ['ota.routePrefix: must be like /ota'],
      },
      {
        name: 'rejects an unknown shared-credential role',
        env: { PAKU_MQTT_SHARED_ROLE: 'admin' },
        want: [
          'mqtt.sharedCredential.role (from PAKU_MQTT_SHARED_ROLE): must be one of full, device',
        ],
      },
      {
        name: 'rejects an unknown anonymous role',
        env: { PAKU_MQTT_ANONYMOUS_ROLE: 'everything' },
        want: [
          'mqtt.anonymousRole (from PAKU_MQTT_ANONYMOUS_ROLE): must be one of readonly, device, full',
        ],
      },
      {
        name: 'rejects a WebSocket origin that is not an origin',
        env: { PAKU_MQTT_WS_ALLOWED_ORIGINS: 'https://ok.example,*' },
        want: [
          'mqtt.ws.allowedOrigins.1 (from PAKU_MQTT_WS_ALLOWED_ORIGINS): must be an origin like https://example.com or http://localhost:3000',
        ],
      },
      {
        name: 'rejects a session expiry of zero',
        env: { PAKU_MQTT_SESSION_EXPIRY_HOURS: '0' },
        want: [
          'mqtt.sessionExpiryHours (from PAKU_MQTT_SESSION_EXPIRY_HOURS): sessionExpiryHours must be at least 1',
        ],
      },
      {
        name: 'rejects a negative quota',
        file: '{"mqtt":{"quotas":{"device":{"retainedBytes":-1}}}}',
        want: ['mqtt.quotas.device.retainedBytes: retainedBytes must be 0 or more'],
      },
      {
        name: 'rejects an unknown quota',
        file: '{"mqtt":{"quotas":{"device":{"retainedBytez":1}}}}',
        want: [
          'mqtt.quotas.device.retainedBytez: Invalid key: Expected never but received "retainedBytez"',
        ],
      },
    ]
  for (const c of bad) {
    it(c.name, () => {
      const r = loadConfig({
        path: 'c.json',
        env: c.env ?? {},
        readFile: files({ 'c.json': c.file ?? '{}' }),
      })
      assert.equal(r.ok, false)
      assert.deepEqual((r as { issues: string[] }).issues, c.want)
      assert.doesNotMatch(JSON.stringify(r), /hunter2/)
    })
  }

  it('splits PAKU_ECOFLOW_DEVICES on commas', () => {
    const r = loadConfig({
      env: { PAKU_ECOFLOW_DEVICES: ' DCABZ8ZE1234567 ,R331ZEB4ZE89012,, ' },
      defaultPath: 'x',
      readFile: files({}),
    })
    assert.ok(r.ok)
    assert.deepEqual(r.config.ecoflow.devices, ['DCABZ8ZE1234567', 'R331ZEB4ZE89012'])
  })

  it('takes the old OTA_API_KEY as PAKU_OTA_API_KEY; PAKU_ADMIN_API_KEY wins when both are set', () => {
    const old = 'old-key-0123456789abcdefghijklmnopq'
    const neu = 'new-key-0123456789abcdefghijklmnopq'
    const one = loadConfig({
      env: { PAKU_OTA_API_KEY: old },
      defaultPath: 'x',
      readFile: files({}),
    })
    const both = loadConfig({
      env: { PAKU_OTA_API_KEY: old, PAKU_ADMIN_API_KEY: neu },
      defaultPath: 'x',
      readFile: files({}),
    })
    assert.ok(one.ok && both.ok)
    assert.equal(one.config.http.adminApiKey, old)
    assert.equal(both.config.http.adminApiKey, neu)
  })

  it('refuses an admin key shorter than 32 characters without echoing it', () => {
    const r = loadConfig({
      env: { PAKU_ADMIN_API_KEY: 'hunter2-is-too-short' },
      defaultPath: 'x',
      readFile: files({}),
    })
    assert.equal(r.ok, false)
    assert.deepEqual((r as { issues: string[] }).issues, [
      'http.adminApiKey (from PAKU_ADMIN_API_KEY): http.adminApiKey must be at least 32 characters (e.g. openssl rand -hex 32)',
    ])
    assert.doesNotMatch(JSON.stringify(r), /hunter2/)
    const exact = loadConfig({
      env: { PAKU_ADMIN_API_KEY: 'k'.repeat(32) },
      defaultPath: 'x',
      readFile: files({}),
    })
    assert.ok(exact.ok, '32 characters are enough')
  })

  it('masks the admin and EcoFlow keys for display', () => {
    const r = loadConfig({
      env: {
        PAKU_ADMIN_API_KEY: 'adm1n-0123456789abcdefghijklmnopqr',
        PAKU_ECOFLOW_ACCESS_KEY: 'acc3ss',
        PAKU_ECOFLOW_SECRET_KEY: 's3cr3t',
        PAKU_MQTT_PASSWORD: 'mqtt-pa55',
      },
      defaultPath: 'x',
      readFile: files({}),
    })
    assert.ok(r.ok)
    assert.doesNotMatch(JSON.stringify(maskSecrets(r.config)), /adm1n|acc3ss|s3cr3t|mqtt-pa55/)
  })

  it('accepts redis:// and rediss:// URLs and masks their password for display', () => {
    for (const url of [
      'redis://127.0.0.1:6379',
      'rediss://:s3cret@redis.example.com:6380/2',
      'redis://paku:s3cret@[::1]:6379/0',
    ]) {
      const r = loadConfig({
        env: { PAKU_CLUSTER_REDIS_URL: url },
        defaultPath: 'x',
        readFile: files({}),
      })
      assert.ok(r.ok, url)
      assert.equal(r.config.cluster.redisUrl, url)
      assert.doesNotMatch(JSON.stringify(maskSecrets(r.config)), /s3cret/)
    }
    const none = loadConfig({ env: {}, defaultPath: 'x', readFile: files({}) })
    assert.ok(none.ok)
    assert.deepEqual(none.config.cluster, { redisUrl: '', instanceId: '', leaderRetrySeconds: 2 })
  })

  it('masks the database password for display', () => {
    const r = loadConfig({
      env: { PAKU_DATABASE_URL: 'postgres://paku:s3cret@db:5432/paku' },
      defaultPath: 'x',
      readFile: files({}),
    })
    assert.ok(r.ok)
    const shown = JSON.stringify(maskSecrets(r.config))
    assert.doesNotMatch(shown, /s3cret/)
    assert.match(shown, /postgres:\/\/paku:\*\*\*@db:5432\/paku/)
  })

  it('masks a password given in the URL query string (libpq and node-postgres take ?password=)', () => {
    for (const url of [
      'postgres://paku@db:5432/paku?password=s3cret&sslmode=require',
      'postgres://db/paku?sslmode=disable&PASSWORD=s3cret',
      'postgres://db/paku?sslpassword=s3cret',
    ]) {
      const r = loadConfig({
        env: { PAKU_DATABASE_URL: url },
        defaultPath: 'x',
        readFile: files({}),
      })
      assert.ok(r.ok, url)
      const shown = JSON.stringify(maskSecrets(r.config))
      assert.doesNotMatch(shown, /s3cret/, url)
      assert.doesNotMatch(maskUrl(url), /s3cret/, url)
    }
    assert.match(
      maskUrl('postgres://paku@db:5432/paku?password=s3cret&sslmode=require'),
      /sslmode=require/,
      'other parameters stay readable',
    )
  })

  it('reads the shared credential, its role, the anonymous role, origins and session expiry from the environment', () => {
    const r = loadConfig({
      env: {
        PAKU_MQTT_USERNAME: 'edge',
        PAKU_MQTT_PASSWORD: 'changeme',
        PAKU_MQTT_SHARED_ROLE: 'device',
        PAKU_MQTT_ANONYMOUS_ROLE: 'full',
        PAKU_MQTT_WS_ALLOWED_ORIGINS: 'https://a.example, http://localhost:3000',
        PAKU_MQTT_SESSION_EXPIRY_HOURS: '24',
      },
      defaultPath: 'x',
      readFile: files({}),
    })
    assert.ok(r.ok)
    assert.deepEqual(r.config.mqtt.sharedCredential, {
      username: 'edge',
      password: 'changeme',
      role: 'device',
    })
    assert.equal(r.config.mqtt.anonymousRole, 'full')
    assert.deepEqual(r.config.mqtt.ws.allowedOrigins, [
      'https://a.example',
      'http://localhost:3000',
    ])
    assert.equal(r.config.mqtt.sessionExpiryHours, 24)
    const d = loadConfig({ env: {}, defaultPath: 'x', readFile: files({}) })
    assert.ok(d.ok)
    assert.equal(
      d.config.mqtt.sharedCredential.role,
      'full',
      'the old behaviour until an operator switches',
    )
    assert.equal(d.config.mqtt.anonymousRole, 'readonly')
    assert.equal(
      d.config.mqtt.quotas.device.retainedBytes,
      1024 * 1024,
      "a device's retained state is at most 1 MiB by default",
    )
  })
})

/** A key of the config schema (a value a config file may set) and its default; `hasDefault` false: none (unset). */
type SchemaKey = { key: string; default: unknown; hasDefault: boolean }
type SchemaNode = {
  type: string
  entries?: Record<string, SchemaNode>
  wrapped?: SchemaNode
  default?: unknown
}

/** Every key of the schema, walking nested objects; records, arrays and unions are values, not sections. */
function schemaKeys(
  node: SchemaNode = ConfigSchema as unknown as SchemaNode,
  path: string[] = [],
  optional?: SchemaNode,
): SchemaKey[] {
  if (node.type === 'optional') return schemaKeys(node.wrapped as SchemaNode, path, node)
  if (node.type === 'strict_object' && node.entries)
    return Object.entries(node.entries).flatMap(([k, child]) => schemaKeys(child, [...path, k]))
  const def: unknown = optional ? v.getDefault(optional as never) : undefined
  return [{ key: path.join('.'), default: def, hasDefault: def !== undefined }]
}

/** How docs/configuration.md writes a default: strings as they are (empty as ""), everything else as JSON. */
const shownDefault = (d: unknown) =>
  `\`${typeof d === 'string' && d !== '' ? d : JSON.stringify(d)}\``

const TABLE_HEADER = '| key | env variable | default | what it does |'

/**
 * What is wrong with the tables under "## Every key": each row is one schema key (in backticks), the
 * exact set of PAKU_* variables that set it ("—" for none), its default exactly as the schema has it
 * ("unset …" for a key without one) and a description; every schema key has a row, and nothing else does.
 */
function keyTableProblems(
  markdown: string,
  keys: readonly SchemaKey[],
  env: readonly { name: string; path: readonly string[] }[],
): string[] {
  const problems: string[] = []
  const lines = markdown.split('\n')
  const start = lines.indexOf('## Every key')
  if (start < 0) return ['no "## Every key" section']
  const end = lines.findIndex((l, i) => i > start && /^## /.test(l))
  const section = lines.slice(start + 1, end < 0 ? undefined : end)
  const rows = new Map<string, string[]>()
  let tables = 0
  for (const [i, line] of section.entries()) {
    if (!line.startsWith('|')) continue
    if (!section[i - 1]?.startsWith('|')) {
      tables++
      if (line !== TABLE_HEADER)
        problems.push(`table header ${JSON.stringify(line)}, want ${JSON.stringify(TABLE_HEADER)}`)
      continue
    }
    if (/^\|(\s*:?-+:?\s*\|)+$/.test(line)) continue
    const cells = line
      .slice(1, line.endsWith('|') ? -1 : undefined)
      .split(/(?<!\\)\|/)
      .map((c) => c.trim())
    const keyCell = /^`([\w.]+)`$/.exec(cells[0] ?? '')?.[1]
    if (cells.length !== 4 || keyCell === undefined) {
      problems.push(`not a row of one key: ${line}`)
      continue
    }
    if (rows.has(keyCell)) problems.push(`${keyCell}: listed twice`)
    rows.set(keyCell, cells)
  }
  if (tables === 0) problems.push('no table under "## Every key"')
  const byKey = new Map(keys.map((k) => [k.key, k]))
  for (const key of rows.keys())
    if (!byKey.has(key)) problems.push(`${key}: not a key of the schema`)
  for (const k of keys) {
    const cells = rows.get(k.key)
    if (!cells) {
      problems.push(`${k.key}: missing`)
      continue
    }
    const [, envCell = '', defaultCell = '', meaning = ''] = cells
    const want = env
      .filter((e) => e.path.join('.') === k.key)
      .map((e) => e.name)
      .sort()
    const listed =
      envCell === '—'
        ? []
        : envCell
            .split(',')
            .map((x) => /^`(PAKU_\w+)`$/.exec(x.trim())?.[1] ?? `(not a variable: ${x.trim()})`)
            .sort()
    if (JSON.stringify(listed) !== JSON.stringify(want))
      problems.push(
        `${k.key}: env variable ${JSON.stringify(envCell)}, want ${want.length ? want.map((n) => `\`${n}\``).join(', ') : '—'}`,
      )
    if (k.hasDefault ? defaultCell !== shownDefault(k.default) : !/^unset\b/.test(defaultCell))
      problems.push(
        `${k.key}: default ${JSON.stringify(defaultCell)}, want ${k.hasDefault ? shownDefault(k.default) : 'unset …'}`,
      )
    if (meaning === '') problems.push(`${k.key}: says nothing about what it does`)
  }
  return problems
}

describe('documentation of the configuration', () => {
  const example = readFileSync('.env.example', 'utf8')
  const page = readFileSync('docs/configuration.md', 'utf8')
  const keys = schemaKeys()

  it('finds every key of the schema with its default (positive control)', () => {
    assert.ok(keys.length >= 100, `keys found: ${keys.length}`)
    const defaults = loadConfig({ env: {}, defaultPath: 'x', readFile: files({}) })
    assert.ok(defaults.ok)
    const at = (key: string) =>
      key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], defaults.config)
    for (const k of keys) assert.deepEqual(at(k.key), k.default, k.key)
    assert.deepEqual(
      keys.filter((k) => !k.hasDefault).map((k) => k.key),
      ['mqtt.ws.allowAnonymous', 'mqtt.tls.allowAnonymous'],
    )
    for (const e of ENV_TABLE)
      assert.ok(
        keys.some((k) => k.key === e.path.join('.')),
        `${e.name} sets ${e.path.join('.')}, a key of the schema`,
      )
  })

  it('finds what is wrong with a key table (positive control)', () => {
    const sample = [
      '## Every key',
      '',
      TABLE_HEADER,
      '|---|---|---|---|',
      '| `a.port` | `PAKU_A_PORT` | `1883` | the port |',
      '| `a.host` | — | `::` | the address |',
      '| `a.open` | — | `false` | unset |',
      '| `a.gone` | — | `1` | no such key |',
      '| `a.note` | `PAKU_A_NOTE` | unset (as `a.open`) | |',
      '',
      '| key | env | default | meaning |',
      '|---|---|---|---|',
      '| `a.port` | — | `1883` | again |',
      '',
      '## Later',
      '| `a.list` | — | `[]` | outside the section |',
    ].join('\n')
    const sampleKeys: SchemaKey[] = [
      { key: 'a.port', default: 1883, hasDefault: true },
      { key: 'a.host', default: '0.0.0.0', hasDefault: true },
      { key: 'a.open', default: undefined, hasDefault: false },
      { key: 'a.note', default: undefined, hasDefault: false },
      { key: 'a.list', default: [], hasDefault: true },
    ]
    const sampleEnv = [
      { name: 'PAKU_A_PORT', path: ['a', 'port'] },
      { name: 'PAKU_A_HOST', path: ['a', 'host'] },
      { name: 'PAKU_A_NOTE', path: ['a', 'note'] },
    ]
    assert.deepEqual(keyTableProblems(sample, sampleKeys, sampleEnv), [
      'table header "| key | env | default | meaning |", want "| key | env variable | default | what it does |"',
      'a.port: listed twice',
      'a.gone: not a key of the schema',
      'a.port: env variable "—", want `PAKU_A_PORT`',
      'a.host: env variable "—", want `PAKU_A_HOST`',
      'a.host: default "`::`", want `0.0.0.0`',
      'a.open: default "`false`", want unset …',
      'a.note: says nothing about what it does',
      'a.list: missing',
    ])
    assert.deepEqual(keyTableProblems('# Nothing', sampleKeys, sampleEnv), [
      'no "## Every key" section',
    ])
  })

  it('docs/configuration.md lists every key of the schema, its env variables and its default, and nothing else', () => {
    assert.deepEqual(keyTableProblems(page, keys, ENV_TABLE), [])
  })

  for (const entry of ENV_TABLE) {
    it(`${entry.name} is in .env.example and docs/configuration.md`, () => {
      assert.match(example, new RegExp(`^#? ?${entry.name}=`, 'm'))
      assert.match(page, new RegExp(`\\b${entry.name}\\b`))
    })
  }
  it('PAKU_CONFIG is documented too', () => {
    assert.match(example, /^#? ?PAKU_CONFIG=/m)
    assert.match(page, /PAKU_CONFIG/)
  })
})

import * as v from 'valibot'

const port = (name: string) =>
  v.pipe(
    v.number(`${name} must be a number`),
    v.integer(`${name} must be an integer`),
    v.minValue(0, `${name} must be between 0 and 65535`),
    v.maxValue(65535, `${name} must be between 0 and 65535`),
  )

const positiveInt = (name: string, max: number) =>
  v.pipe(
    v.number(`${name} must be a number`),
    v.integer(`${name} must be an integer`),
    v.minValue(1, `${name} must be at least 1`),
    v.maxValue(max, `${name} must be at most ${max}`),
  )

const days = (name: string) =>
  v.pipe(
    v.number(`${name} must be a number`),
    v.integer(`${name} must be an integer`),
    v.minValue(0, `${name} must be 0 (keep) or more`),
    v.maxValue(36_500, `${name} must be at most 36500`),
  )

const MiB = 1024 * 1024

export const ANONYMOUS_ROLES = ['readonly', 'device', 'full'] as const
export const SHARED_ROLES = ['full', 'device'] as const
export const QUOTA_KINDS = ['device', 'bridge', 'service', 'anonymous'] as const

/**
 * What one login (a device, a bridge, a service, or all anonymous clients together) may keep in the
 * broker. Over a quota a PUBLISH closes the connection, a SUBSCRIBE gets 0x80, a CONNECT for one more
 * persistent session gets CONNACK 5, and a message for a full offline queue is dropped for that client.
 */
function quotaShape(
  kind: string,
  d: {
    retainedTopics: number
    retainedBytes: number
    persistentSessions: number
    subscriptions: number
    queuedMessages: number
    queuedBytes: number
    relayedSensors: number
  },
) {
  const n = (key: string, max: number, def: number) =>
    v.optional(
      v.pipe(
        v.number(`${key} must be a number`),
        v.integer(`${key} must be an integer`),
        v.minValue(0, `${key} must be 0 or more`),
        v.maxValue(max, `${key} must be at most ${max}`),
      ),
      def,
    )
  return v.strictObject({
    /** Retained topics it may hold. */
    retainedTopics: n('retainedTopics', 10_000_000, d.retainedTopics),
    /** Bytes of retained payloads it may hold. */
    retainedBytes: n('retainedBytes', 16 * 1024 * MiB, d.retainedBytes),
    /** Persistent sessions (clean=false) it may keep. */
    persistentSessions: n('persistentSessions', 1_000_000, d.persistentSessions),
    /** Subscriptions one of its clients may hold at once. */
    subscriptions: n('subscriptions', 1_000_000, d.subscriptions),
    /** QoS 1/2 messages queued (or in flight) for one of its sessions; more are dropped for that session. */
    queuedMessages: n('queuedMessages', 10_000_000, d.queuedMessages),
    /** Bytes of those queued messages. */
    queuedBytes: n('queuedBytes', 16 * 1024 * MiB, d.queuedBytes),
    /** Relayed sensor ids (`+/sensors/{id}/data`, `+/fridge/{id}/data`) a device may claim (devices only). */
    relayedSensors: n(`${kind}.relayedSensors`, 100_000, d.relayedSensors),
  })
}

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const

const LogLevel = v.picklist(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(', ')}`)

/**
 * The one description of paku's configuration: types, defaults and limits.
 * Secret-bearing fields have their own messages so a bad value is never echoed.
 */
const ConfigShape = v.strictObject({
  /** Where paku keeps local state: the embedded PostgreSQL cluster (and later the spool). */
  dataDir: v.optional(v.pipe(v.string(), v.minLength(1, 'must not be empty')), './.paku'),
  log: v.optional(
    v.strictObject({
      level: v.optional(LogLevel, 'info'),
      format: v.optional(
        v.picklist(LOG_FORMATS, `must be one of ${LOG_FORMATS.join(', ')}`),
        'auto',
      ),
      /** Per-namespace overrides, e.g. { "ingest": "debug" }. */
      levels: v.optional(v.record(v.string(), LogLevel), {}),
    }),
    {},
  ),
  database: v.optional(
    v.strictObject({
      /** postgres://… URL. Empty means: start the embedded PostgreSQL under dataDir. */
      url: v.optional(
        v.union(
          [
            v.literal(''),
            v.pipe(
              v.string('database.url must be a postgres:// URL'),
              v.regex(/^postgres(ql)?:\/\/\S+$/, 'database.url must be a postgres:// URL'),
            ),
          ],
          'database.url must be a postgres:// URL',
        ),
        '',
      ),
      poolSize: v.optional(positiveInt('poolSize', 100), 10),
      embedded: v.optional(
        v.strictObject({
          /** TCP port of the embedded cluster, on 127.0.0.1 only. */
          port: v.optional(port('port'), 5433),
        }),
        {},
      ),
    }),
    {},
  ),
  mqtt: v.optional(
    v.strictObject({
      host: v.optional(v.string(), '0.0.0.0'),
      port: v.optional(port('port'), 1883),
      ws: v.optional(
        v.strictObject({
          enabled: v.optional(v.boolean(), true),
          host: v.optional(v.string(), '0.0.0.0'),
          port: v.optional(port('port'), 8083),
          path: v.optional(v.pipe(v.string(), v.startsWith('/', 'must start with /')), '/mqtt'),
          /**
           * Browser origins (scheme://host[:port]) allowed to open MQTT over WebSocket. A request with
           * any other Origin header is refused; clients that send none (devices, scripts) are not affected.
           */
          allowedOrigins: v.optional(
            v.array(
              v.pipe(
                v.string(),
                v.regex(
                  /^https?:\/\/[^\s/?#]+$/,
                  'must be an origin like https://example.com or http://localhost:3000',
                ),
              ),
            ),
            [],
          ),
          /** Anonymous clients on this listener; unset: as mqtt.allowAnonymous. */
          allowAnonymous: v.optional(v.boolean('mqtt.ws.allowAnonymous must be true or false')),
        }),
        {},
      ),
      /** Largest MQTT packet accepted; a bigger one closes the connection (MQTT 3.1.1 has no way to refuse it). */
      maxPacketBytes: v.optional(positiveInt('maxPacketBytes', 268_435_455), 262_144),
      maxTopicLevels: v.optional(positiveInt('maxTopicLevels', 100), 16),
      maxClientIdLength: v.optional(positiveInt('maxClientIdLength', 65_535), 128),
      /** A socket that has not sent CONNECT within this time is closed. */
      connectTimeoutMs: v.optional(positiveInt('connectTimeoutMs', 600_000), 10_000),
      /** MQTT over TLS (and WebSocket over TLS), certificates from PEM files; reloaded on SIGHUP. */
      tls: v.optional(
        v.pipe(
          v.strictObject({
            enabled: v.optional(v.boolean(), false),
            host: v.optional(v.string(), '0.0.0.0'),
            port: v.optional(port('port'), 8883),
            /** WebSocket over TLS port (when mqtt.ws.enabled). */
            wsPort: v.optional(port('wsPort'), 8884),
            certFile: v.optional(v.string(), ''),
            keyFile: v.optional(v.string(), ''),
            /** CA that signs client certificates; with requireClientCert a valid client certificate is required. */
            caFile: v.optional(v.string(), ''),
            requireClientCert: v.optional(v.boolean(), false),
            /**
             * Anonymous clients on the TLS listeners (MQTT and WebSocket over TLS); unset: as
             * mqtt.allowAnonymous. The old stack: plain 1883 anonymous on the LAN, 8883 password only.
             */
            allowAnonymous: v.optional(v.boolean('mqtt.tls.allowAnonymous must be true or false')),
          }),
          v.check(
            (t) => !t.enabled || (t.certFile !== '' && t.keyFile !== ''),
            'mqtt.tls needs certFile and keyFile when enabled',
          ),
          v.check(
            (t) => !t.requireClientCert || t.caFile !== '',
            'mqtt.tls.requireClientCert needs caFile',
          ),
        ),
        {},
      ),
      /** QoS 2 messages a client may have awaiting PUBREL; more closes the connection (aedes' guard). */
      maxInflightInbound: v.optional(positiveInt('maxInflightInbound', 65_535), 100),
      /**
       * Failed logins per minute for one username from one address (an IPv6 /64 counts as one address)
       * before that pair is refused for a minute. A success resets only its own pair.
       */
      maxAuthFailuresPerMinute: v.optional(positiveInt('maxAuthFailuresPerMinute', 10_000), 10),
      /** Failed logins per minute from one address, whatever the username, before it is refused for a minute. */
      maxAuthFailuresPerAddressPerMinute: v.optional(
        positiveInt('maxAuthFailuresPerAddressPerMinute', 100_000),
        30,
      ),
      /** Open connections per remote address (a NAT'd site with many devices may need more). */
      maxConnectionsPerAddress: v.optional(positiveInt('maxConnectionsPerAddress', 1_000_000), 256),
      /**
       * Accept clients without a username on the plain TCP listener, and on the others unless they say
       * otherwise (mqtt.ws.allowAnonymous, mqtt.tls.allowAnonymous). Development or a closed LAN only.
       */
      allowAnonymous: v.optional(v.boolean('mqtt.allowAnonymous must be true or false'), false),
      /**
       * What an anonymous client may do: readonly (subscribe, never publish), device (scoped as the
       * device named by its client id) or full.
       */
      anonymousRole: v.optional(
        v.picklist(ANONYMOUS_ROLES, `must be one of ${ANONYMOUS_ROLES.join(', ')}`),
        'readonly',
      ),
      /**
       * The old stack's one shared credential (MQTT_USER/MQTT_PASSWORD), compiled into every paku-core
       * device. role full: today's rights for everyone holding it (warned at start); device: a login is
       * scoped as the device named by its client id.
       */
      sharedCredential: v.optional(
        v.strictObject({
          username: v.optional(v.string('mqtt.sharedCredential.username must be a string'), ''),
          password: v.optional(v.string('mqtt.sharedCredential.password must be a string'), ''),
          role: v.optional(
            v.picklist(SHARED_ROLES, `must be one of ${SHARED_ROLES.join(', ')}`),
            'full',
          ),
        }),
        {},
      ),
      /** A persistent session (clean=false) whose client has been away this long is deleted, queued messages included. */
      sessionExpiryHours: v.optional(positiveInt('sessionExpiryHours', 87_600), 168),
      /** Limits on what each kind of login may keep in the broker (see quotaShape). */
      quotas: v.optional(
        v.strictObject({
          device: v.optional(
            quotaShape('device', {
              retainedTopics: 100,
              retainedBytes: MiB,
              persistentSessions: 1,
              subscriptions: 64,
              queuedMessages: 1000,
              queuedBytes: MiB,
              relayedSensors: 32,
            }),
            {},
          ),
          bridge: v.optional(
            quotaShape('bridge', {
              retainedTopics: 10_000,
              retainedBytes: 32 * MiB,
              persistentSessions: 4,
              subscriptions: 1000,
              queuedMessages: 100_000,
              queuedBytes: 32 * MiB,
              relayedSensors: 0,
            }),
            {},
          ),
          service: v.optional(
            quotaShape('service', {
              retainedTopics: 1000,
              retainedBytes: 8 * MiB,
              persistentSessions: 4,
              subscriptions: 1000,
              queuedMessages: 10_000,
              queuedBytes: 8 * MiB,
              relayedSensors: 0,
            }),
            {},
          ),
          anonymous: v.optional(
            quotaShape('anonymous', {
              retainedTopics: 100,
              retainedBytes: MiB,
              persistentSessions: 10,
              subscriptions: 100,
              queuedMessages: 1000,
              queuedBytes: MiB,
              relayedSensors: 32,
            }),
            {},
          ),
          /** Retained and queued message bytes the broker holds in all (and loads at start-up), whoever owns them. */
          totalBytes: v.optional(positiveInt('totalBytes', 16 * 1024 * MiB), 64 * MiB),
          /** Persistent sessions in all. */
          totalPersistentSessions: v.optional(
            positiveInt('totalPersistentSessions', 10_000_000),
            1000,
          ),
        }),
        {},
      ),
    }),
    {},
  ),
  http: v.optional(
    v.strictObject({
      host: v.optional(v.string(), '0.0.0.0'),
      port: v.optional(port('port'), 8080),
      /** Largest request body on /api/* (routes that take uploads set their own, larger limit). */
      maxBodyBytes: v.optional(positiveInt('maxBodyBytes', 1_073_741_824), 1_048_576),
      /** Failed admin-key attempts per address and minute before that address gets 429 for a minute. */
      maxAuthFailuresPerMinute: v.optional(positiveInt('maxAuthFailuresPerMinute', 10_000), 10),
      /** Key for /api/admin/* (header X-API-Key or Authorization: Bearer), at least 32 characters. Empty: only named keys count (`paku key create`, the setup link). */
      adminApiKey: v.optional(
        v.pipe(
          v.string('http.adminApiKey must be a string'),
          v.check(
            (k) => k === '' || k.length >= 32,
            'http.adminApiKey must be at least 32 characters (e.g. openssl rand -hex 32)',
          ),
        ),
        '',
      ),
    }),
    {},
  ),
  ecoflow: v.optional(
    v.strictObject({
      /** Open API keys from the EcoFlow developer portal; without both the subsystem is off and silent. */
      accessKey: v.optional(v.string('ecoflow.accessKey must be a string'), ''),
      secretKey: v.optional(v.string('ecoflow.secretKey must be a string'), ''),
      /** eu (default), us, global, or a base URL (a test server). Keys are region-bound. */
      apiUrl: v.optional(
        v.pipe(
          v.string(),
          v.regex(/^(eu|us|global|https?:\/\/\S+)$/, 'must be eu, us, global or an http(s):// URL'),
        ),
        'eu',
      ),
      /** Serial numbers to poll; empty = every device of the account (device/list). */
      devices: v.optional(
        v.array(
          v.pipe(v.string(), v.regex(/^[A-Za-z0-9]{4,40}$/, 'must be a device serial number')),
        ),
        [],
      ),
      pollSeconds: v.optional(
        v.pipe(
          v.number(),
          v.integer('pollSeconds must be an integer'),
          v.minValue(5, 'pollSeconds must be at least 5'),
          v.maxValue(86_400, 'pollSeconds must be at most 86400'),
        ),
        30,
      ),
      requestTimeoutMs: v.optional(positiveInt('requestTimeoutMs', 120_000), 10_000),
      /** auto: the documented signature, falling back to the old collector's form on error 8521. */
      signing: v.optional(
        v.picklist(['auto', 'documented', 'legacy'], 'must be auto, documented or legacy'),
        'auto',
      ),
    }),
    {},
  ),
  ota: v.optional(
    v.strictObject({
      /** Base URL devices download from, put into cmd/ota links (e.g. https://iot.example.com/ota). Empty: http://<http.host>:<port>. */
      publicUrl: v.optional(
        v.union(
          [
            v.literal(''),
            v.pipe(
              v.string(),
              v.regex(/^https?:\/\/[^\s?#]+$/, 'must be an http(s):// URL without query'),
            ),
          ],
          'must be an http(s):// URL without query',
        ),
        '',
      ),
      /** Largest firmware image accepted (ESP32 app partitions are at most a few MB). */
      maxFirmwareBytes: v.optional(positiveInt('maxFirmwareBytes', 67_108_864), 16_777_216),
      /** Path prefix a reverse proxy may leave on device routes (the old stack's /ota); '' for none. */
      routePrefix: v.optional(
        v.union(
          [v.literal(''), v.pipe(v.string(), v.regex(/^\/[A-Za-z0-9._-]+$/, 'must be like /ota'))],
          'must be like /ota',
        ),
        '/ota',
      ),
      /** How often running rollouts take in new devices, check thresholds and time-outs. */
      rolloutTickSeconds: v.optional(positiveInt('rolloutTickSeconds', 3600), 10),
      /** A device that accepted an update but reports nothing for this long has failed (timed out). */
      inProgressTimeoutMinutes: v.optional(positiveInt('inProgressTimeoutMinutes', 10_080), 60),
      /** A device that has not acknowledged cmd/ota gets it again when it shows up, at most this often. */
      renotifySeconds: v.optional(positiveInt('renotifySeconds', 86_400), 300),
      /**
       * The old OTA service's firmware directory (its `paku_firmware` volume: `{model}_{version}.bin`).
       * At start, releases adopted from the old database whose image is not stored yet are read from it
       * (each checked against its recorded SHA-256). Empty: none.
       */
      firmwareDir: v.optional(v.string('ota.firmwareDir must be a path'), ''),
      /** Requests per minute one address may make to the open device routes (/api/firmware/check and /update). */
      deviceRequestsPerMinute: v.optional(positiveInt('deviceRequestsPerMinute', 1_000_000), 60),
    }),
    {},
  ),
  /** Several paku instances on one PostgreSQL (docs/scaling.md). Empty redisUrl: a single instance, no Redis. */
  cluster: v.optional(
    v.strictObject({
      /** redis:// or rediss:// URL of the Redis that fans messages out between instances (aedes' mqemitter-redis). */
      redisUrl: v.optional(
        v.union(
          [
            v.literal(''),
            v.pipe(
              v.string('cluster.redisUrl must be a redis:// or rediss:// URL'),
              // Scheme, [user:password@]host[:port], an optional database number; and a host URL() accepts.
              v.check((u) => {
                if (!/^rediss?:\/\/[^\s/?#]+(\/\d{0,5})?$/.test(u)) return false
                try {
                  return new URL(u).hostname !== ''
                } catch {
                  return false
                }
              }, 'cluster.redisUrl must be a redis:// or rediss:// URL'),
            ),
          ],
          'cluster.redisUrl must be a redis:// or rediss:// URL',
        ),
        '',
      ),
      /** This instance's name in logs, /health and the aedes broker id; empty: hostname-pid. */
      instanceId: v.optional(
        v.pipe(
          v.string('cluster.instanceId must be a string'),
          v.regex(
            /^[\w.:-]{0,64}$/,
            'cluster.instanceId must be up to 64 letters, digits, . _ : -',
          ),
        ),
        '',
      ),
      /** Seconds between a standby instance's attempts to take over singleton work (and the leader's connection checks). */
      leaderRetrySeconds: v.optional(positiveInt('leaderRetrySeconds', 300), 2),
    }),
    {},
  ),
  rollup: v.optional(
    v.strictObject({
      /** How often the 5-minute and hourly rollups catch up with new rows. */
      intervalSeconds: v.optional(positiveInt('intervalSeconds', 3600), 60),
    }),
    {},
  ),
  /** Days to keep each kind of row; 0 keeps it forever (the default: nothing is deleted unless asked). */
  retention: v.optional(
    v.pipe(
      v.strictObject({
        measurementsDays: v.optional(days('measurementsDays'), 0),
        statusDays: v.optional(days('statusDays'), 0),
        ecoflowDays: v.optional(days('ecoflowDays'), 0),
        rejectsDays: v.optional(days('rejectsDays'), 0),
        rollup5mDays: v.optional(days('rollup5mDays'), 0),
      }),
      // Dashboards read EcoFlow and status rows, and the 5-minute rollups, up to 14 days back.
      v.check(
        (r) => r.statusDays === 0 || r.statusDays >= 14,
        'retention.statusDays must be 0 or at least 14: dashboards read status rows up to 14 days back',
      ),
      v.check(
        (r) => r.ecoflowDays === 0 || r.ecoflowDays >= 14,
        'retention.ecoflowDays must be 0 or at least 14: dashboards read EcoFlow rows up to 14 days back',
      ),
      v.check(
        (r) => r.rollup5mDays === 0 || r.rollup5mDays >= 14,
        'retention.rollup5mDays must be 0 or at least 14: dashboards read 5-minute rollups up to 14 days back',
      ),
    ),
    {},
  ),
  ingest: v.optional(
    v.pipe(
      v.strictObject({
        /** Rows per multi-row write; a full batch flushes at once. */
        batchSize: v.optional(positiveInt('batchSize', 50_000), 1000),
        /** A partial batch is flushed after at most this long. */
        flushIntervalMs: v.optional(positiveInt('flushIntervalMs', 60_000), 200),
        /**
         * How long a QoS 1/2 message may wait for others to share its commit (and so its PUBACK waits),
         * while they arrive often enough to; 0 commits each as soon as it can. See createCommitWindow.
         */
        commitWindowMs: v.optional(
          v.pipe(
            v.number('commitWindowMs must be a number'),
            v.integer('commitWindowMs must be an integer'),
            v.minValue(0, 'commitWindowMs must be 0 or more'),
            v.maxValue(1000, 'commitWindowMs must be at most 1000'),
          ),
          20,
        ),
        /**
         * Telemetry batches written at the same time, each on its own database connection: while one
         * commits, the next is already being written (status, config and OTA rows are written alone).
         */
        concurrentWrites: v.optional(positiveInt('concurrentWrites', 8), 2),
        /** A message payload above this is rejected (and kept, truncated, in ingest_rejects). */
        maxPayloadBytes: v.optional(positiveInt('maxPayloadBytes', 268_435_455), 65_536),
        /** QoS 0 rows held in memory before new ones are dropped (counted); QoS 1/2 wait instead. */
        maxPendingRows: v.optional(positiveInt('maxPendingRows', 10_000_000), 200_000),
        /**
         * Rows waiting for the database beyond which paku stops reading from connections that publish
         * QoS 0 (TCP backpressure) until the writer has caught up to half of it.
         */
        backpressureRows: v.optional(positiveInt('backpressureRows', 10_000_000), 10_000),
        /** Largest on-disk spool (database outage); when full, QoS 1/2 are no longer acknowledged. */
        spoolMaxBytes: v.optional(
          positiveInt('spoolMaxBytes', Number.MAX_SAFE_INTEGER),
          1_073_741_824,
        ),
      }),
      v.check(
        (i) => i.backpressureRows <= i.maxPendingRows,
        'ingest.backpressureRows must not be above ingest.maxPendingRows',
      ),
    ),
    {},
  ),
})

export const ConfigSchema = v.pipe(
  ConfigShape,
  // The writers' connections come from the pool (the broker, the API and the jobs queue for theirs).
  v.forward(
    v.check(
      (c) => c.ingest.concurrentWrites <= c.database.poolSize,
      'concurrentWrites must not be above database.poolSize',
    ),
    ['ingest', 'concurrentWrites'],
  ),
)

export type Config = v.InferOutput<typeof ConfigSchema>
export type ConfigInput = v.InferInput<typeof ConfigSchema>

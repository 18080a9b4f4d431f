/** Shared by integration tests: a fresh database per test file, and a config with every port on 0. */
import { randomBytes } from 'node:crypto'
import { Kysely, PostgresDialect } from 'kysely'
import { connect, createServer, type Socket } from 'node:net'
import type { TestContext } from 'node:test'
import pg from 'pg'
import * as v from 'valibot'
import { createApp } from '../src/app.js'
import { sqlDir } from '../src/assets.js'
import { ConfigSchema, deepFreeze, type Config, type ConfigInput } from '../src/config/index.js'
import { migrate, readSqlDir, type DB } from '../src/db/index.js'
import { createLogger, type Logger } from '../src/log/index.js'
import { logRecords, type PakuProcess } from './local-process.js'

type After = { after: (fn: () => Promise<void>) => void }
const stacks = new WeakMap<After, Array<() => Promise<unknown> | unknown>>()

/**
 * Registers cleanup to run last-in-first-out when the test ends (node:test runs its own after hooks
 * in registration order, which would drop a database before the app using it has stopped).
 */
export function defer(t: After, fn: () => Promise<unknown> | unknown): void {
  let stack = stacks.get(t)
  if (!stack) {
    const fresh: Array<() => Promise<unknown> | unknown> = []
    stacks.set(t, fresh)
    t.after(async () => {
      while (fresh.length > 0) await (fresh.pop() as () => unknown)()
    })
    stack = fresh
  }
  stack.push(fn)
}

export function serverUrl(): string {
  const url = process.env.PAKU_TEST_DATABASE_URL
  if (!url) throw new Error('PAKU_TEST_DATABASE_URL is not set: run tests with `npm test`')
  return url
}

/** Creates an empty database for this test file and drops it afterwards; returns its URL. */
export async function testDatabase(t: After): Promise<string> {
  const server = new URL(serverUrl())
  const name = `paku_t_${randomBytes(5).toString('hex')}`
  const admin = new pg.Client({ connectionString: server.toString() })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  defer(t, async () => {
    const c = new pg.Client({ connectionString: server.toString() })
    await c.connect()
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await c.end()
  })
  const url = new URL(server.toString())
  url.pathname = `/${name}`
  return url.toString()
}

/** testDatabase() with every migration applied, and a Kysely on a pool of `max` connections closed after. */
export async function migratedDatabase(
  t: After,
  max = 4,
): Promise<{ url: string; db: Kysely<DB> }> {
  const url = await testDatabase(t)
  const db = new Kysely<DB>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max }) }),
  })
  defer(t, () => db.destroy())
  await migrate(db, readSqlDir(sqlDir()))
  return { url, db }
}

/** A valid config for tests: every port 0 (any free one), loopback only, quiet logs. */
export function testConfig(overrides: ConfigInput & { databaseUrl: string }): Config {
  const { databaseUrl, ...rest } = overrides
  const input: ConfigInput = {
    ...rest,
    dataDir: rest.dataDir ?? '.paku-test/data',
    database: { ...rest.database, url: databaseUrl },
    // Like the committed development config: anonymous clients with full rights, on loopback only.
    mqtt: {
      host: '127.0.0.1',
      port: 0,
      allowAnonymous: true,
      anonymousRole: 'full',
      ...rest.mqtt,
      ws: { host: '127.0.0.1', port: 0, ...rest.mqtt?.ws },
      quotas: {
        ...rest.mqtt?.quotas,
        anonymous: { persistentSessions: 1000, ...rest.mqtt?.quotas?.anonymous },
      },
    },
    http: { host: '127.0.0.1', port: 0, ...rest.http },
    ingest: { flushIntervalMs: 20, ...rest.ingest },
    log: {
      level: (process.env.PAKU_TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent',
      ...rest.log,
    },
  }
  return deepFreeze(v.parse(ConfigSchema, input))
}

export function testLogger(): Logger {
  return createLogger({
    level: (process.env.PAKU_TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent',
    format: 'pretty',
  })
}

/** Starts the real app (db, ingest, broker, http) on free ports and stops it after the test. */
export async function startApp(
  t: After,
  config: Config,
  o: { log?: Logger; now?: () => number } = {},
) {
  const app = createApp({
    config,
    log: o.log ?? testLogger(),
    migrations: readSqlDir(sqlDir()),
    version: 'test',
    ...(o.now ? { now: o.now } : {}),
  })
  await app.start()
  defer(t, () => app.stop())
  const { mqtt, ws } = app.broker.addresses()
  return {
    app,
    mqttUrl: `mqtt://127.0.0.1:${mqtt?.port}`,
    wsUrl: `ws://127.0.0.1:${ws?.port}${config.mqtt.ws.path}`,
    httpUrl: `http://127.0.0.1:${app.http.address()?.port}`,
  }
}

/** A pg client on the test database, closed after the test. */
export async function sqlClient(t: After, url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  defer(t, () => c.end())
  return c
}

/** Polls until fn returns a truthy value or the timeout passes (for rows written by the batch writer). */
export async function eventually<T>(
  fn: () => Promise<T>,
  { timeoutMs = 5000, what = 'condition' as string | (() => string) } = {},
): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs
  let last: T
  for (;;) {
    last = await fn()
    if (last) return last as NonNullable<T>
    if (Date.now() > until)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`,
      )
    await new Promise((r) => setTimeout(r, 25))
  }
}

/**
 * A TCP proxy to PostgreSQL that a test can cut and restore: a real network outage for paku
 * (connections reset, new ones refused) without stopping the shared test server.
 */
export async function pgProxy(t: After, url: string) {
  const target = new URL(url)
  const sockets = new Set<Socket>()
  let up = true
  const server = createServer((client) => {
    if (!up) return client.destroy()
    const upstream = connect(Number(target.port || 5432), target.hostname)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => undefined)
    }
    client.pipe(upstream).pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  defer(
    t,
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  )
  const proxied = new URL(url)
  proxied.hostname = '127.0.0.1'
  proxied.port = String((server.address() as { port: number }).port)
  return {
    url: proxied.toString(),
    /** Drops every open connection and refuses new ones. */
    cut(): void {
      up = false
      for (const s of sockets) s.destroy()
    },
    restore(): void {
      up = true
    },
  }
}

/** The ready banner of a `paku serve` started with runPaku (its log record), once it is out. */
export async function pakuReady(p: PakuProcess): Promise<Record<string, unknown>> {
  return eventually(async () => logRecords(p.lines).find((l) => String(l.msg).endsWith('ready')), {
    timeoutMs: 60_000,
    what: () => `the ready banner; output so far:\n${p.lines.join('\n')}`,
  })
}

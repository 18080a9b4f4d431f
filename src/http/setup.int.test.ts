/**
 * First run: the one-time setup link. Attacks first (no link while a key exists, a forged or guessed
 * token, an expired one, a reused one, many at once, oversized and malformed bodies), then the way it
 * is meant to be used, and that the token is in no log line but the one meant for the operator.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { createLogger } from '../log/index.js'
import { sqlClient, startApp, testConfig, testDatabase } from '../../scripts/test-helpers.js'
import { createKey, revokeKey, SETUP_TTL_MS } from './index.js'

const KEY = 'setup-test-admin-key-0123456789-padded-to-32-chars'

async function start(
  t: TestContext,
  o: {
    adminApiKey?: string
    now?: () => number
    maxAuthFailuresPerMinute?: number
    before?: (url: string) => Promise<void>
  } = {},
) {
  const databaseUrl = await testDatabase(t)
  const lines: string[] = []
  const log = createLogger({ level: 'debug', format: 'json', write: (l) => lines.push(l) })
  if (o.before) {
    // Something done to the database before paku starts (a key made with `paku key create`).
    const first = await startApp(t, testConfig({ databaseUrl }), {})
    await o.before(databaseUrl)
    await first.app.stop()
  }
  const s = await startApp(
    t,
    testConfig({
      databaseUrl,
      http: {
        adminApiKey: o.adminApiKey ?? '',
        maxAuthFailuresPerMinute: o.maxAuthFailuresPerMinute ?? 10,
      },
    }),
    { log, ...(o.now ? { now: o.now } : {}) },
  )
  const records = () =>
    lines.map((l) => JSON.parse(l) as { msg: string; url?: string; level: string })
  const link = records().find((r) => r.msg.startsWith('no admin key yet'))?.url
  const token = link ? new URL(link).hash.replace(/^#setup=/, '') : undefined
  const post = async (body: unknown, raw?: string) => {
    const r = await fetch(`${s.httpUrl}/api/setup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: raw ?? JSON.stringify(body),
    })
    return {
      status: r.status,
      json: (await r.json()) as {
        status?: number
        message?: string
        key?: string
        name?: string
        scopes?: string[]
      },
      headers: r.headers,
    }
  }
  return { ...s, databaseUrl, lines, records, link, token, post }
}

describe('first run: the setup link', () => {
  it('opens no link when PAKU_ADMIN_API_KEY is set, or when a named key exists (paku key create)', async (t) => {
    const configured = await start(t, { adminApiKey: KEY })
    assert.equal(configured.link, undefined)
    assert.equal((await configured.post({ token: 'x'.repeat(43), name: 'admin' })).status, 410)

    const named = await start(t, {
      before: async (url) => {
        const db = await sqlClient(t, url)
        await db.query(
          `INSERT INTO admin_keys (name, key_sha256, scopes) VALUES ('ci', repeat('a', 64), ARRAY['read'])`,
        )
      },
    })
    assert.equal(named.link, undefined)
    assert.equal((await named.post({ token: 'x'.repeat(43), name: 'admin' })).status, 410)

    // Positive control: the same start with no key at all logs a link with a 256-bit token.
    const fresh = await start(t)
    assert.ok(fresh.link, 'a link is logged')
    assert.match(fresh.link ?? '', /^http:\/\/127\.0\.0\.1:\d+\/ui\/#setup=[A-Za-z0-9_-]{43}$/)
  })

  it('refuses forged, truncated and oversized tokens (401, counted per address, then 429) and malformed bodies (400)', async (t) => {
    const s = await start(t, { maxAuthFailuresPerMinute: 1000 })
    const token = s.token as string
    const forged = [
      token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A'),
      token.slice(0, 42),
      `${token}x`,
      token.toUpperCase(),
      '',
    ]
    for (const f of forged)
      assert.equal(
        (await s.post({ token: f, name: 'admin' })).status,
        401,
        `forged ${JSON.stringify(f)}`,
      )
    const bad: Array<[unknown, string | undefined, RegExp]> = [
      [{ token, name: 'Admin Key' }, undefined, /name must be 1–64/],
      [{ token, name: '../../etc/passwd' }, undefined, /name must be/],
      [{ token, name: 'x'.repeat(65) }, undefined, /name must be/],
      [{ token: 'x'.repeat(129), name: 'admin' }, undefined, /token is too long/],
      [{ token: 42, name: 'admin' }, undefined, /token must be a string/],
      [{ token, name: 'admin', scopes: ['admin'] }, undefined, /scopes/],
      [null, '{"token": ', /body must be JSON/],
      [null, '[]', /token/],
    ]
    for (const [body, raw, want] of bad) {
      const r = await s.post(body, raw)
      assert.equal(r.status, 400, JSON.stringify(body ?? raw))
      assert.match(String(r.json.message), want)
    }
    const huge = await s.post(
      null,
      JSON.stringify({ token, name: 'admin', pad: 'x'.repeat(2_000_000) }),
    )
    assert.equal(huge.status, 413)
    const db = await sqlClient(t, s.databaseUrl)
    assert.equal(
      (await db.query('SELECT 1 FROM admin_keys')).rowCount,
      0,
      'none of them created a key',
    )
    // The link still works: nothing above used it up.
    const ok = await s.post({ token, name: 'admin' })
    assert.equal(ok.status, 201, JSON.stringify(ok.json))

    // Guessing is limited per address: after 3 wrong tokens even a right one waits.
    const limited = await start(t, { maxAuthFailuresPerMinute: 3 })
    for (let i = 0; i < 3; i++)
      assert.equal(
        (await limited.post({ token: `guess-${i}-${'x'.repeat(38)}`, name: 'admin' })).status,
        401,
      )
    const blocked = await limited.post({ token: limited.token, name: 'admin' })
    assert.equal(blocked.status, 429)
    assert.ok(Number(blocked.headers.get('retry-after')) > 0)
  })

  it('expires on the injected clock', async (t) => {
    const t0 = Date.parse('2026-03-01T12:00:00Z')
    let now = t0
    const a = await start(t, { now: () => now })
    const b = await start(t, { now: () => now })
    // Positive control: a link used a moment before it expires works.
    now = t0 + SETUP_TTL_MS - 1
    assert.equal((await a.post({ token: a.token, name: 'admin' })).status, 201)
    now = t0 + SETUP_TTL_MS
    const late = await b.post({ token: b.token, name: 'admin' })
    assert.equal(late.status, 410)
    assert.match(String(late.json.message), /expired/)
    now = t0
    assert.equal(
      (await b.post({ token: b.token, name: 'admin' })).status,
      410,
      'an expired link is gone, even if the clock goes back',
    )
    const db = await sqlClient(t, b.databaseUrl)
    assert.equal((await db.query('SELECT 1 FROM admin_keys')).rowCount, 0)
  })

  it('works once: of 25 requests at the same time exactly one gets a key; a second use is refused', async (t) => {
    const s = await start(t)
    const answers = await Promise.all(
      Array.from({ length: 25 }, (_, i) => s.post({ token: s.token, name: `admin${i}` })),
    )
    const created = answers.filter((a) => a.status === 201)
    assert.equal(created.length, 1, answers.map((a) => a.status).join(','))
    assert.deepEqual(
      [...new Set(answers.filter((a) => a.status !== 201).map((a) => a.status))],
      [410],
    )
    const db = await sqlClient(t, s.databaseUrl)
    assert.equal((await db.query('SELECT 1 FROM admin_keys')).rowCount, 1)
    assert.equal((await s.post({ token: s.token, name: 'again' })).status, 410)
    // Revoking the key does not bring the used link back.
    await revokeKey(s.app.db.db, created[0]?.json.name as string)
    assert.equal((await s.post({ token: s.token, name: 'again' })).status, 410)
  })

  it('is void once any key exists, even one made while paku runs', async (t) => {
    const s = await start(t)
    await createKey(s.app.db.db, 'from-cli', ['read'])
    const r = await s.post({ token: s.token, name: 'admin' })
    assert.equal(r.status, 410)
    assert.match(String(r.json.message), /an admin key exists/)
    const db = await sqlClient(t, s.databaseUrl)
    assert.deepEqual((await db.query('SELECT name FROM admin_keys')).rows, [{ name: 'from-cli' }])
  })

  it('creates a key with every scope, shown once and stored only as its hash; the token is logged only in the start-up line', async (t) => {
    const s = await start(t)
    const token = s.token as string
    assert.equal((await s.post({ token: `${token.slice(0, -2)}zz`, name: 'admin' })).status, 401)
    const r = await s.post({ token, name: 'ops' })
    assert.equal(r.status, 201)
    assert.equal(r.headers.get('cache-control'), 'no-store')
    assert.deepEqual(r.json.scopes, ['read', 'upload', 'rollout', 'ingest', 'command', 'admin'])
    const key = r.json.key as string
    assert.match(key, /^paku_[A-Za-z0-9_-]{43}$/)
    const db = await sqlClient(t, s.databaseUrl)
    const stored = await db.query('SELECT name, key_sha256, scopes FROM admin_keys')
    assert.equal(stored.rows[0]?.name, 'ops')
    assert.notEqual(stored.rows[0]?.key_sha256, key)
    // The key works for an admin route (and the setup route is gone for good).
    const creds = await fetch(`${s.httpUrl}/api/admin/mqtt/credentials`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'dev1', role: 'device' }),
    })
    assert.equal(creds.status, 201)
    assert.equal((await s.post({ token, name: 'again' })).status, 410)
    await s.app.stop()
    const withToken = s.lines.filter((l) => l.includes(token))
    assert.equal(withToken.length, 1, 'one line carries the token')
    assert.match(withToken[0] ?? '', /"level":"warn".*no admin key yet/)
    assert.equal(s.lines.filter((l) => l.includes(key)).length, 0, 'the key is in no log line')
    assert.ok(
      s.records().some((x) => x.msg === 'first admin key created through the setup link'),
      'positive control: the log was captured',
    )
  })
})

/**
 * Which key scope each route needs, as the routes declare it: the whole table, the same table in the
 * docs, and the attacks that a scope read from the path, or a limiter reset by a success, let through.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { sqlClient, startApp, testConfig, testDatabase } from '../../scripts/test-helpers.js'
import { documentedRoutes, routeKey } from '../../scripts/test-support/http-api-doc.js'
import { createKey, routeScopes } from './index.js'

const KEY = 'scopes-test-admin-key-0123456789abcdef'

// Every route behind a key, with the scope it needs (admin includes all others).
const TABLE: Array<[string, string, string]> = [
  ['POST', '/api/admin/firmware/upload', 'upload'],
  ['PUT', '/api/admin/firmware/:model/:version', 'upload'],
  ['GET', '/api/admin/firmware/releases', 'read'],
  ['GET', '/api/admin/firmware/:model/:version', 'read'],
  ['DELETE', '/api/admin/firmware/:model/:version', 'admin'],
  ['POST', '/api/admin/rollout/create', 'rollout'],
  ['POST', '/api/admin/rollouts', 'rollout'],
  ['GET', '/api/admin/rollouts', 'read'],
  ['GET', '/api/admin/rollouts/:id', 'read'],
  ['GET', '/api/admin/rollouts/:id/devices', 'read'],
  ['POST', '/api/admin/rollouts/:id/pause', 'rollout'],
  ['POST', '/api/admin/rollouts/:id/resume', 'rollout'],
  ['POST', '/api/admin/rollouts/:id/cancel', 'rollout'],
  ['POST', '/api/admin/rollouts/:id/advance', 'rollout'],
  ['POST', '/api/admin/rollouts/:id/retry', 'rollout'],
  ['GET', '/api/admin/devices', 'read'],
  ['GET', '/api/admin/devices/:id', 'read'],
  ['GET', '/api/admin/devices/:id/ota', 'read'],
  ['PUT', '/api/admin/devices/:id', 'admin'],
  ['POST', '/api/admin/devices/:id/pull-token', 'admin'],
  ['DELETE', '/api/admin/devices/:id/pull-token', 'admin'],
  ['GET', '/api/admin/groups', 'read'],
  ['PUT', '/api/admin/groups/:name', 'admin'],
  ['POST', '/api/admin/groups/:name/devices', 'admin'],
  ['DELETE', '/api/admin/groups/:name/devices/:id', 'admin'],
  ['DELETE', '/api/admin/groups/:name', 'admin'],
  ['GET', '/api/admin/update-status', 'read'],
  ['POST', '/api/device/:id/update-status', 'rollout'],
  ['GET', '/api/admin/ecoflow/devices', 'read'],
  ['POST', '/api/admin/ecoflow/poll', 'admin'],
  ['POST', '/api/admin/ecoflow/devices/:sn/control', 'admin'],
  ['GET', '/api/v1/measurements', 'read'],
  ['GET', '/api/v1/measurements/series', 'read'],
  ['GET', '/api/v1/latest', 'read'],
  ['GET', '/api/v1/devices', 'read'],
  ['GET', '/api/v1/devices/:id', 'read'],
  ['GET', '/api/v1/devices/:id/history', 'read'],
  ['GET', '/api/v1/fleet', 'read'],
  ['POST', '/api/v1/telemetry', 'ingest'],
  ['GET', '/api/v1/live', 'read'],
  ['POST', '/api/v1/commands', 'command'],
  ['GET', '/api/v1/commands', 'read'],
  ['GET', '/api/v1/commands/:id', 'read'],
  ['GET', '/api/admin/mqtt/credentials', 'read'],
  ['GET', '/api/admin/mqtt/clients', 'read'],
  ['POST', '/api/admin/mqtt/credentials', 'admin'],
  ['DELETE', '/api/admin/mqtt/credentials/:username', 'admin'],
  ['GET', '/api/admin/mqtt/sensors', 'read'],
  ['PUT', '/api/admin/mqtt/sensors/:site/:system/:sensor', 'admin'],
  ['DELETE', '/api/admin/mqtt/sensors/:site/:system/:sensor', 'admin'],
]

describe('key scopes, declared by each route', () => {
  it('every route behind a key declares the scope in this table, and the docs show the same table', async (t) => {
    const sut = await startApp(t, testConfig({ databaseUrl: await testDatabase(t) }))
    const actual = routeScopes(sut.app.http.app)
      .filter(
        (r) => /^\/api\/(admin|device|v1)\//.test(r.path) && r.path !== '/api/v1/openapi.json',
      )
      .map((r) => [r.method, r.path, r.scope ?? '(none)'])
    assert.deepEqual(actual.sort(), [...TABLE].sort())
    // The route rows of docs/http-api.md whose auth cell is a scope.
    const documented = documentedRoutes(readFileSync('docs/http-api.md', 'utf8'))
      .filter((d) => /^`\w+`$/.test(d.auth))
      .map((d) => `${d.key} ${d.auth.slice(1, -1)}`)
    assert.deepEqual(
      documented.sort(),
      TABLE.map(([method, path, scope]) => `${routeKey(method, path)} ${scope}`).sort(),
      'docs/http-api.md#keys-and-scopes: the route tables give every key route with its scope',
    )
  })

  it("a scope is not read from the path: a rollout key cannot delete the MQTT credential named 'rollout'", async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(t, testConfig({ databaseUrl: url, http: { adminApiKey: KEY } }))
    const rolloutKey = await createKey(sut.app.db.db, 'ci', ['upload', 'rollout'])
    const admin = (method: string, path: string, key: string, body?: unknown) =>
      fetch(`${sut.httpUrl}${path}`, {
        method,
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      })
    assert.equal(
      (
        await admin('POST', '/api/admin/mqtt/credentials', KEY, {
          username: 'rollout',
          role: 'service',
        })
      ).status,
      201,
    )
    const del = await admin('DELETE', '/api/admin/mqtt/credentials/rollout', rolloutKey)
    assert.equal(del.status, 403)
    assert.deepEqual(await del.json(), { status: 403, message: 'this key lacks the "admin" scope' })
    assert.equal(
      (await admin('PUT', '/api/admin/groups/firmware', rolloutKey, {})).status,
      403,
      'nor a group named firmware',
    )
    const db = await sqlClient(t, url)
    assert.equal(
      (await db.query(`SELECT 1 FROM mqtt_credentials WHERE username = 'rollout'`)).rowCount,
      1,
    )
    // Positive control: the key does what its scopes allow.
    assert.equal(
      (await admin('GET', '/api/admin/rollouts', rolloutKey)).status,
      403,
      'no read scope',
    )
    assert.equal(
      (await admin('POST', '/api/admin/rollouts/1/pause', rolloutKey)).status,
      404,
      'rollout scope: it got to the route',
    )
    assert.equal((await admin('DELETE', '/api/admin/mqtt/credentials/rollout', KEY)).status, 204)
  })

  it("counts wrong keys from an address however often that address's own key succeeds", async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({ databaseUrl: url, http: { adminApiKey: KEY, maxAuthFailuresPerMinute: 3 } }),
    )
    const readKey = await createKey(sut.app.db.db, 'reader', ['read'])
    const get = (key: string, method = 'GET', path = '/api/admin/devices') =>
      fetch(`${sut.httpUrl}${path}`, { method, headers: { 'x-api-key': key } })
    for (let i = 0; i < 3; i++) {
      if (i > 0) {
        assert.equal((await get(readKey)).status, 200, 'its own key works in between')
        assert.equal(
          (await get(readKey, 'DELETE', '/api/admin/groups/x')).status,
          403,
          'and a 403 in between',
        )
      }
      assert.equal((await get(`guess-${i}-0123456789abcdefghijklmnopqrstuv`)).status, 401)
    }
    const blocked = await get(KEY)
    assert.equal(blocked.status, 429, 'blocked, even with the right key')
    assert.ok(Number(blocked.headers.get('retry-after')) > 0)
  })
})

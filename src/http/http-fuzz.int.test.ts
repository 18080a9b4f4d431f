import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { startApp, testConfig, testDatabase } from '../../scripts/test-helpers.js'

const PATHS = [
  '/health',
  '/api/admin/ecoflow/devices',
  '/api/admin/ecoflow/poll',
  '/api/admin/ecoflow/devices/DCABZ8ZE1234567/control',
  '/api/admin/mqtt/credentials',
  '/api/admin/mqtt/credentials/x',
  '/nope',
]

describe('property: the HTTP API over real sockets', () => {
  it('answers any method, path, key and body with a JSON error or success, never a 500', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        http: {
          adminApiKey: 'fuzz-admin-key-0123456789abcdefghij',
          maxAuthFailuresPerMinute: 10_000,
          maxBodyBytes: 4096,
        },
      }),
    )
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'),
        fc.oneof(fc.constantFrom(...PATHS), fc.webPath()),
        fc.constantFrom(undefined, 'fuzz-admin-key-0123456789abcdefghij', 'wrong', ''),
        fc.oneof(
          fc.json(),
          fc.string({ maxLength: 200 }),
          fc.string({ minLength: 5000, maxLength: 6000 }),
        ),
        async (method, path, key, body) => {
          const headers: Record<string, string> = { 'content-type': 'application/json' }
          if (key !== undefined) headers['x-api-key'] = key
          const res = await fetch(`${sut.httpUrl}${path.startsWith('/') ? path : `/${path}`}`, {
            method,
            headers,
            body: method === 'GET' ? undefined : body,
          })
          const text = await res.text()
          assert.ok(res.status < 500, `${method} ${path} → ${res.status} ${text}`)
          if (res.status >= 400) {
            const json = JSON.parse(text) as { status: number; message: string }
            assert.equal(json.status, res.status)
            assert.ok(json.message.length > 0)
          }
        },
      ),
      { numRuns: 300 },
    )
  })
})

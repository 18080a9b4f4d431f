/**
 * docs/http-api.md lists every HTTP route paku serves, and no other: the routes of the Hono app as
 * app.ts assembles it (built, not started: no database needed) and the paths of the OpenAPI document.
 * Each key route's `auth` cell is the scope the route declares; an open route's is not a scope.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { testConfig, testLogger } from '../scripts/test-helpers.js'
import { documentedRoutes, routeKey } from '../scripts/test-support/http-api-doc.js'
import { openApiDocument } from './api/index.js'
import { commandsOpenApi } from './commands/index.js'
import { createApp } from './app.js'
import { routeScopes, SCOPES, setupOpenApi } from './http/index.js'

type Served = { method: string; path: string; scope: string | undefined }

/** What is wrong with the doc's route list against the routes served. */
function checkRouteDoc(doc: string, served: readonly Served[]) {
  const documented = documentedRoutes(doc)
  const servedKeys = new Map(served.map((r) => [routeKey(r.method, r.path), r]))
  const seen = new Map<string, number>()
  for (const d of documented) seen.set(d.key, (seen.get(d.key) ?? 0) + 1)
  const wrongAuth: string[] = []
  for (const d of documented) {
    const r = servedKeys.get(d.key)
    if (!r) continue
    const want = r.scope === undefined ? undefined : `\`${r.scope}\``
    const givesScope = SCOPES.some((s) => d.auth === `\`${s}\``)
    if (want !== undefined ? d.auth !== want : givesScope)
      wrongAuth.push(
        `${d.key}: docs say ${d.auth}, the route ${r.scope === undefined ? 'takes no key' : `needs \`${r.scope}\``}`,
      )
  }
  return {
    missing: [...servedKeys.keys()].filter((k) => !seen.has(k)).sort(),
    unknown: documented
      .filter((d) => !servedKeys.has(d.key))
      .map((d) => `${d.key} (line ${d.line})`),
    duplicated: [...seen].filter(([, n]) => n > 1).map(([k]) => k),
    wrongAuth,
  }
}

/** The app as `paku serve` assembles it (default config), built but not started. */
function servedRoutes(): Served[] {
  const config = testConfig({ databaseUrl: 'postgres://unused@127.0.0.1:1/unused' })
  const app = createApp({ config, log: testLogger(), migrations: [], version: 'docs' })
  return routeScopes(app.http.app)
}

const clean = { missing: [], unknown: [], duplicated: [], wrongAuth: [] }

describe('docs/http-api.md#routes', () => {
  const doc = readFileSync('docs/http-api.md', 'utf8')
  const served = servedRoutes()

  it('lists every route the app serves, once, with the scope it declares, and no route it does not serve', () => {
    assert.ok(served.length > 50, `the app has its routes (${served.length})`)
    assert.deepEqual(checkRouteDoc(doc, served), clean)
  })

  it('lists every path of the OpenAPI document, which are all served', () => {
    const paths = openApiDocument('docs', [commandsOpenApi, setupOpenApi]).paths as Record<
      string,
      Record<string, unknown>
    >
    const openApi = Object.entries(paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => routeKey(m, path)),
    )
    assert.ok(openApi.length >= 10)
    const documented = new Set(documentedRoutes(doc).map((d) => d.key))
    const servedKeys = new Set(served.map((r) => routeKey(r.method, r.path)))
    assert.deepEqual(
      openApi.filter((k) => !documented.has(k)),
      [],
      'in the OpenAPI document but not in docs/http-api.md',
    )
    assert.deepEqual(
      openApi.filter((k) => !servedKeys.has(k)),
      [],
      'in the OpenAPI document but not served',
    )
  })

  it('positive controls: a route left out, one that does not exist, one listed twice, a wrong scope', () => {
    const lines = doc.split('\n')
    const fleet = lines.findIndex((l) => l.startsWith('| `GET /api/v1/fleet` |'))
    const health = lines.findIndex((l) => l.startsWith('| `GET /health` |'))
    assert.ok(fleet >= 0 && health >= 0, 'the rows the controls edit exist')
    const without = lines.filter((_, i) => i !== fleet).join('\n')
    assert.deepEqual(checkRouteDoc(without, served).missing, ['GET /api/v1/fleet'])
    const ota = lines.findIndex((l) => l.startsWith('| `GET /ota/api/firmware/check` |'))
    assert.deepEqual(
      checkRouteDoc(lines.filter((_, i) => i !== ota).join('\n'), served).missing,
      ['GET /ota/api/firmware/check'],
      'the /ota device routes count too',
    )
    const extra = `${doc}\n| \`DELETE /api/v1/fleet/{id}\` | \`admin\` | not a route |\n`
    assert.deepEqual(checkRouteDoc(extra, served).unknown, [
      `DELETE /api/v1/fleet/:id (line ${doc.split('\n').length + 1})`,
    ])
    assert.deepEqual(checkRouteDoc(`${doc}\n${lines[fleet]}\n`, served).duplicated, [
      'GET /api/v1/fleet',
    ])
    const rescoped = lines
      .map((l, i) =>
        i === fleet
          ? l.replace('| `read` |', '| `admin` |')
          : i === health
            ? l.replace('| none |', '| `read` |')
            : l,
      )
      .join('\n')
    assert.equal(
      checkRouteDoc(rescoped, served).wrongAuth.length,
      2,
      'a key route with another scope, an open route given one',
    )
  })
})

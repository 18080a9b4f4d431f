import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { parse } from 'yaml'
import { grafanaDir } from './assets.js'

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]))
}

/** Every `datasource` object anywhere in a dashboard. */
function datasourceRefs(node: unknown, out: Array<{ uid?: string; type?: string }> = []) {
  if (Array.isArray(node)) for (const n of node) datasourceRefs(n, out)
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'datasource' && v && typeof v === 'object') out.push(v as { uid?: string })
      else datasourceRefs(v, out)
    }
  }
  return out
}

describe('grafana provisioning tree', () => {
  const files = walk(grafanaDir())
  const yamlFiles = files.filter((f) => /\.ya?ml$/.test(f))
  const dashboards = files.filter((f) => f.endsWith('.json'))
  const datasources = yamlFiles
    .filter((f) => f.includes(`${join('datasources', '')}`))
    .flatMap((f) => (parse(readFileSync(f, 'utf8')) as { datasources: Array<{ uid: string; type: string; secureJsonData?: Record<string, string> }> }).datasources)

  it('has the datasource with uid DS_POSTGRESQL, with credentials from the environment only', () => {
    const ds = datasources.find((d) => d.uid === 'DS_POSTGRESQL')
    assert.ok(ds)
    assert.equal(ds.type, 'grafana-postgresql-datasource')
    assert.match(ds.secureJsonData?.password ?? '', /^\$\{[A-Z_]+\}$/)
  })

  for (const f of yamlFiles) {
    it(`${f.slice(grafanaDir().length + 1)} parses with apiVersion 1`, () => {
      assert.equal((parse(readFileSync(f, 'utf8')) as { apiVersion: number }).apiVersion, 1)
    })
  }

  it('has the old stack\'s dashboards under their uids (links and bookmarks keep working), and the full EcoFlow detail', () => {
    const found = dashboards.map((f) => (JSON.parse(readFileSync(f, 'utf8')) as { uid: string }).uid).sort()
    assert.deepEqual(found, ['ecoflow-full', 'ecoflow-overview-v2', 'edge-devices', 'ota-monitoring', 'paku-heater', 'paku-ruuvi'])
  })
  const uids = new Set(datasources.map((d) => d.uid))
  for (const f of dashboards) {
    it(`${f.slice(grafanaDir().length + 1)} parses and references only provisioned datasources`, () => {
      const dash = JSON.parse(readFileSync(f, 'utf8')) as { uid: string; panels: unknown[] }
      assert.match(dash.uid, /^[a-z0-9-]+$/)
      const refs = datasourceRefs(dash)
      assert.ok(refs.length > 0)
      for (const ref of refs) assert.ok(ref.uid && uids.has(ref.uid), `unknown datasource ${JSON.stringify(ref)}`)
    })
  }
})

import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { parse } from 'yaml'
import { dashboardText, LEGACY_DIR, legacyDashboards } from '../scripts/grafana-legacy.js'
import { grafanaDir } from './assets.js'
import { runCli, type CliIo } from './cli/index.js'

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  )
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

type Dashboard = {
  uid: string
  title: string
  panels: Array<{ id: number; title: string; type: string }>
}
const readDashboard = (f: string) => JSON.parse(readFileSync(f, 'utf8')) as Dashboard
/** Where a provider's `path` (written for /etc/grafana/provisioning) is in this tree. */
const PROVISIONING = '/etc/grafana/provisioning/'

/**
 * The old stack's dashboards (docs/compatibility.md, "Grafana"; the panel titles are the old dashboards' JSON's):
 * each must exist under its uid with every one of these panel titles (a title listed twice, twice).
 * paku's dashboards may have more panels; the legacy ones have exactly these.
 */
const OLD: Array<{ uid: string; title: string; legacy?: true; panels: string[] }> = [
  {
    uid: 'paku-ruuvi',
    title: 'Temperature and Humidity Overview',
    panels: [
      'Temperature (°C)',
      'Humidity (%)',
      'Dew Point (°C)',
      'Absolute Humidity (g/m³)',
      'EcoFlow Temperatures (°C)',
    ],
  },
  {
    uid: 'paku-heater',
    title: 'Hydronic Heater Overview',
    panels: [
      'Heater State',
      'Safety',
      'Battery',
      'Coolant Temperature',
      'Flow Rate',
      'Coolant Temperature History',
      'Battery Voltage & Flow Rate',
      'Heater State History',
    ],
  },
  {
    uid: 'edge-devices',
    title: 'Edge Devices Overview',
    panels: [
      'Total Devices',
      'Online Devices',
      'Devices Up-to-Date',
      'Latest Firmware',
      'Status Updates (Last Hour)',
      'Device Status Overview',
      'Status Update Rate (Messages/5min)',
      'WiFi Signal Strength (RSSI)',
      'Recent Status Updates (Last 50)',
      'Device Update History',
      'Device Uptime Trends',
      'Current Device States',
      'Device Uptime',
    ],
  },
  {
    uid: 'ota-monitoring',
    title: 'OTA Update Monitoring',
    panels: [
      'Total Devices',
      'Latest Firmware',
      'Devices Up-to-Date',
      'Active Updates',
      'Device Status & Update Progress',
      'Recent Updates (Last 20)',
      'Update Timeline (Last 30 Days)',
    ],
  },
  {
    uid: 'ecoflow-overview-v2',
    title: 'EcoFlow — Yleiskatsaus',
    panels: [
      'Online',
      'Akku',
      'Sisään',
      'Ulos',
      'Solar',
      'Jäljellä',
      'Akku °C',
      'Invertteri °C',
      'Netto',
      'Akkutaso (%)',
      'Tehovirta: Sisään / Ulos / Netto',
      'Tehon lähteet',
      'Lähdöt',
      'Lämpötilat',
    ],
  },
  {
    uid: 'ecoflow-full',
    title: 'EcoFlow — Täydellinen',
    panels: [
      'Online',
      'Akku',
      'Sisään',
      'Ulos',
      'Netto',
      'Solar',
      'AC Sisään',
      'Jäljellä',
      'Akku °C',
      'Akkutaso & Aika jäljellä',
      'Tehovirta: Sisään / Ulos / Netto',
      'Tehon lähteet: Solar & AC',
      'Lähdöt: AC & DC',
      'Lämpötilat',
      'Jännitteet',
      'Virta',
      'Akkujännitteet',
      'USB Lähdöt',
      'Lataussyklit',
      'Kapasiteetti',
      'Jäljellä kap.',
      'BMS Virta',
      'Cell Min °C',
      'Cell Max °C',
      'Cell Min V',
      'Cell Max V',
    ],
  },
  {
    uid: 'ecoflow-api-data',
    title: 'EcoFlow API Data',
    legacy: true,
    panels: [
      'Battery Level',
      'Remaining Time',
      'Battery Temperature',
      'Inverter Temperature',
      'Input Power',
      'Output Power',
      'Solar Input',
      'AC Output',
      'AC Input',
      '12V Car Port',
      'USB-C 1',
      'USB-C 2',
      'USB 1',
      'USB 2',
      'QC USB 1',
      'Battery Level Over Time',
      'Remaining Runtime',
      'Power Flow (Input vs Output)',
      'Net Power (Charging/Discharging)',
      'Solar Input Power',
      'AC Input/Output',
      'System Temperatures',
    ],
  },
  {
    uid: 'paku-ecoflow-realtime',
    title: 'EcoFlow - Real-Time Overview',
    legacy: true,
    panels: [
      'Battery Level',
      'Power Flow (Input/Output)',
      'Current Input',
      'Current Output',
      'Battery Temperature',
      'Battery Voltage',
      'Battery Level History',
      'Temperature History',
    ],
  },
  {
    uid: 'ecoflow-exporter-style',
    title: 'EcoFlow (Exporter Style)',
    legacy: true,
    panels: [
      'Online Status',
      'Inverter IN Watts',
      'Inverter IN Volts',
      'Inverter IN Current',
      'Charging Remaining Time',
      'Full Capacity',
      'BMS Current',
      'Battery Volts',
      'MIN Cell Volts',
      'MAX Cell Volts',
      'Battery Level (SOC)',
      'Inverter OUT Watts',
      'Inverter OUT Volts',
      'Inverter OUT Current',
      'Discharging Remaining Time',
      'Remain Capacity',
      'Battery Cycles',
      'Inverter Temp',
      'MIN Cell Temp',
      'MAX Cell Temp',
      'Charge/Discharge Status',
      'Battery Level',
      'I/O Watts',
      'Remaining Time',
      'I/O Volts',
      'Temperature',
      'Current',
      'USB Output',
      'Battery Volts',
      'Solar Power',
    ],
  },
  {
    uid: 'paku-ecoflow',
    title: 'EcoFlow Power Station Overview',
    legacy: true,
    panels: [
      'Battery Level',
      'Current Input Power',
      'Current Output Power',
      'Time Remaining',
      'Solar Input',
      'Battery Level Over Time',
      'Power In/Out',
      'Solar Input Over Time',
      'Output Breakdown',
      'Net Power (Input - Output)',
      'Power Statistics (Last Hour)',
      'Recent Measurements',
    ],
  },
  {
    uid: 'ecoflow-realtime',
    title: 'EcoFlow Real-Time',
    legacy: true,
    panels: [
      'Battery %',
      'Input Power',
      'Output Power',
      'Time Remaining',
      'Recent Measurements',
      'Battery History',
      'Power Flow',
    ],
  },
  {
    uid: 'ecoflow-unified',
    title: 'EcoFlow Unified Dashboard',
    legacy: true,
    panels: [
      'Battery Level',
      'Input Power',
      'Output Power',
      'Battery Temperature',
      'Remaining Time',
      'Solar Input',
      'AC Output',
      'AC Input',
      'Inverter Temp',
      'MPPT Temp',
      'Battery Level & Runtime History',
      'Power Flow: Input, Output, and Net',
      'Power Sources (Solar & AC)',
      'AC & DC Output',
      'System Temperatures',
    ],
  },
]

function io() {
  const out: string[] = []
  const err: string[] = []
  const value: CliIo = {
    env: {},
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    waitForStop: () => new Promise(() => {}),
    isTTY: false,
  }
  return { io: value, out, err }
}

describe('grafana provisioning tree', () => {
  const files = walk(grafanaDir())
  const yamlFiles = files.filter((f) => /\.ya?ml$/.test(f))
  const dashboards = files.filter((f) => f.endsWith('.json'))
  const datasources = yamlFiles
    .filter((f) => f.includes(`${join('datasources', '')}`))
    .flatMap(
      (f) =>
        (
          parse(readFileSync(f, 'utf8')) as {
            datasources: Array<{
              uid: string
              type: string
              secureJsonData?: Record<string, string>
            }>
          }
        ).datasources,
    )
  type Provider = { name: string; folder: string; type: string; options: { path: string } }
  const providers = yamlFiles
    .filter((f) => f.includes(`${join('dashboards', '')}`))
    .map((f) => ({
      file: f.slice(grafanaDir().length + 1),
      ...(parse(readFileSync(f, 'utf8')) as { providers: Provider[] }),
    }))

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

  it('has two dashboard providers, folder "paku" and folder "EcoFlow — Legacy", each loading its own directory of this tree', () => {
    const all = providers.flatMap((p) =>
      p.providers.map((q) => ({
        file: p.file,
        name: q.name,
        folder: q.folder,
        type: q.type,
        path: q.options.path,
      })),
    )
    assert.deepEqual(
      all
        .map(({ file, name, folder, path }) => ({ file, name, folder, path }))
        .sort((a, b) => a.file.localeCompare(b.file)),
      [
        {
          file: join('dashboards', 'ecoflow-legacy.yaml'),
          name: 'paku-dashboards-legacy',
          folder: 'EcoFlow — Legacy',
          path: `${PROVISIONING}dashboards/ecoflow-legacy`,
        },
        {
          file: join('dashboards', 'paku.yaml'),
          name: 'paku-dashboards',
          folder: 'paku',
          path: `${PROVISIONING}dashboards/paku`,
        },
      ],
    )
    for (const p of all) {
      assert.equal(p.type, 'file')
      // The paths are written for a copy at /etc/grafana/provisioning; in this tree each holds dashboards and nothing else.
      const dir = join(grafanaDir(), p.path.slice(PROVISIONING.length))
      const entries = readdirSync(dir)
      assert.ok(
        entries.length > 0 && entries.every((e) => e.endsWith('.json')),
        `${p.path}: dashboards only`,
      )
    }
    // Every dashboard is under exactly one provider.
    assert.deepEqual(
      dashboards
        .map((f) =>
          f
            .slice(grafanaDir().length + 1)
            .split('/')
            .slice(0, 2)
            .join('/'),
        )
        .filter((d, i, a) => a.indexOf(d) === i)
        .sort(),
      ['dashboards/ecoflow-legacy', 'dashboards/paku'],
    )
  })

  it("has the old stack's dashboards under their uids, the legacy ones in their own folder, each uid once", () => {
    const found = dashboards.map((f) => ({
      dir: f.slice(grafanaDir().length + 1).split('/')[1],
      uid: readDashboard(f).uid,
    }))
    assert.deepEqual(
      found
        .filter((d) => d.dir === 'paku')
        .map((d) => d.uid)
        .sort(),
      OLD.filter((o) => !o.legacy)
        .map((o) => o.uid)
        .sort(),
    )
    assert.deepEqual(
      found
        .filter((d) => d.dir === 'ecoflow-legacy')
        .map((d) => d.uid)
        .sort(),
      OLD.filter((o) => o.legacy)
        .map((o) => o.uid)
        .sort(),
    )
    assert.equal(new Set(found.map((d) => d.uid)).size, found.length)
  })

  // The superset check: replacing an old dashboard (same uid) loses none of its panels.
  for (const old of OLD) {
    it(`${old.uid} ("${old.title}") has every panel of the old dashboard${old.legacy ? ', and only those' : ''}`, () => {
      const f = dashboards.find((x) => readDashboard(x).uid === old.uid)
      assert.ok(f, `no dashboard ${old.uid}`)
      const dash = readDashboard(f)
      assert.equal(dash.title, old.title)
      const titles = dash.panels.map((p) => p.title)
      const missing = [...old.panels]
      for (const t of titles) {
        const i = missing.indexOf(t)
        if (i >= 0) missing.splice(i, 1)
      }
      assert.deepEqual(missing, [], `${old.uid}: panels missing`)
      if (old.legacy) assert.equal(titles.length, old.panels.length)
      assert.equal(
        new Set(dash.panels.map((p) => p.id)).size,
        dash.panels.length,
        'panel ids unique',
      )
    })
  }

  it('the legacy folder is exactly what scripts/grafana-legacy.ts generates (94 panels)', () => {
    const dir = join(grafanaDir(), LEGACY_DIR)
    const generated = legacyDashboards()
    assert.deepEqual(readdirSync(dir).sort(), [...generated.keys()].sort())
    for (const [name, d] of generated)
      assert.equal(
        readFileSync(join(dir, name), 'utf8'),
        dashboardText(d),
        `${name}: run node --import tsx scripts/grafana-legacy.ts`,
      )
    assert.equal(
      [...generated.values()].reduce((n, d) => n + (d.panels as unknown[]).length, 0),
      94,
    )
  })

  const uids = new Set(datasources.map((d) => d.uid))
  for (const f of dashboards) {
    it(`${f.slice(grafanaDir().length + 1)} parses and references only provisioned datasources`, () => {
      const dash = JSON.parse(readFileSync(f, 'utf8')) as { uid: string; panels: unknown[] }
      assert.match(dash.uid, /^[a-z0-9-]+$/)
      const refs = datasourceRefs(dash)
      assert.ok(refs.length > 0)
      for (const ref of refs)
        assert.ok(ref.uid && uids.has(ref.uid), `unknown datasource ${JSON.stringify(ref)}`)
    })
  }
})

describe('paku grafana export', () => {
  const tree = (dir: string) =>
    walk(dir)
      .map((f) => f.slice(dir.length + 1))
      .sort()

  it('writes the whole tree by default, the legacy folder and its provider included', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'paku-grafana-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const a = io()
    assert.equal(await runCli(['grafana', 'export', dir], a.io), 0)
    assert.deepEqual(tree(dir), tree(grafanaDir()))
    assert.match(a.out.join('\n'), /EcoFlow — Legacy/)
  })

  it('--no-legacy leaves the legacy folder and its provider out, and removes them from an earlier export', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'paku-grafana-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const a = io()
    assert.equal(await runCli(['grafana', 'export', dir, '--no-legacy'], a.io), 0)
    const without = tree(grafanaDir()).filter(
      (f) => !f.startsWith(join('dashboards', 'ecoflow-legacy')),
    )
    assert.deepEqual(tree(dir), without)
    assert.ok(readdirSync(join(dir, 'dashboards', 'paku')).includes('ecoflow-full.json'))
    assert.deepEqual(
      a.out.filter((l) => l.startsWith('removed')),
      [],
    )

    assert.equal(await runCli(['grafana', 'export', dir], io().io), 0)
    assert.ok(existsSync(join(dir, 'dashboards', 'ecoflow-legacy.yaml')))
    const b = io()
    assert.equal(await runCli(['grafana', 'export', '--no-legacy', dir], b.io), 0)
    assert.deepEqual(tree(dir), without)
    assert.deepEqual(
      b.out.filter((l) => l.startsWith('removed')),
      [
        'removed dashboards/ecoflow-legacy.yaml (--no-legacy)',
        'removed dashboards/ecoflow-legacy (--no-legacy)',
      ],
    )
  })
})

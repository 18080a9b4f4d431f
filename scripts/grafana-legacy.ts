/**
 * The "EcoFlow — Legacy" dashboards: the old stack's six legacy EcoFlow dashboards under their uids and
 * titles, with their panel titles and what each panel shows, written over paku's ecoflow_measurements
 * (the same columns) and its rollups. Generated from the compact spec below: 94 panels of a handful of
 * shapes are easier to read, review and keep consistent here than as ~10,000 lines of JSON.
 *
 *   node --import tsx scripts/grafana-legacy.ts   rewrites grafana-provisioning/dashboards/ecoflow-legacy/
 *
 * src/grafana.test.ts checks that the committed files are exactly this output.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { grafanaDir } from '../src/assets.js'
import {
  chartPanel,
  DEVICE_SN_VARIABLE,
  ECOFLOW_ONLINE_SQL,
  ecoflowLatestSql,
  layout,
  tablePanel,
  valuePanel,
  type Mapping,
  type PanelSpec,
  type Series,
  type Steps,
  type ValueOptions,
} from './grafana-panels.js'

/** Where the generated dashboards live in the provisioning tree (their provider: dashboards/ecoflow-legacy.yaml). */
export const LEGACY_DIR = join('dashboards', 'ecoflow-legacy')

const latest = (title: string, expr: string, o: ValueOptions & { w?: number; h?: number } = {}) =>
  valuePanel({ type: 'stat', title, sql: ecoflowLatestSql(expr), ...o })
const gauge = (title: string, expr: string, o: ValueOptions & { w?: number; h?: number } = {}) =>
  valuePanel({ type: 'gauge', title, sql: ecoflowLatestSql(expr), ...o })
const line = (name: string, expr: string, skipZero = false): Series => ({
  name,
  expr,
  ...(skipZero ? { skipZero } : {}),
})
const chart = (
  title: string,
  unit: string,
  series: Series[],
  o: { w?: number; h?: number; overrides?: unknown[]; custom?: Record<string, unknown> } = {},
) => chartPanel({ title, unit, series, ...o })

// Colours and scales the old panels used.
const SOC: Steps = [
  [null, 'red'],
  [20, 'yellow'],
  [50, 'green'],
]
const TEMP: Steps = [
  [null, 'green'],
  [40, 'yellow'],
  [60, 'red'],
]
const ONLINE: Mapping[] = [
  { type: 'value', options: { '0': { text: 'Offline', color: 'red' } } },
  { type: 'value', options: { '1': { text: 'Online', color: 'green' } } },
]
// remain_time_min is 5999 when nothing drains (or fills) the battery: shown as ∞.
const ENDLESS_MIN: Mapping[] = [
  { type: 'range', options: { from: 5500, to: 6000, result: { text: '∞', color: 'green' } } },
]
const ENDLESS_S: Mapping[] = [
  { type: 'range', options: { from: 330_000, to: 360_000, result: { text: '∞', color: 'green' } } },
]
const online = (title: string) =>
  valuePanel({
    type: 'stat',
    title,
    sql: ECOFLOW_ONLINE_SQL,
    steps: [[null, 'red']],
    mappings: ONLINE,
  })
/** Remaining time as a duration ("5 hours, 12 minutes"), as the old "Xh Ym" text showed it. */
const remaining = (title: string, o: { w?: number; h?: number } = {}) =>
  latest(title, '{remain_time_min} * 60', { unit: 'dtdurations', mappings: ENDLESS_S, ...o })

type Legacy = { uid: string; title: string; tags: string[]; from: string; panels: PanelSpec[] }

const LEGACY: Legacy[] = [
  {
    uid: 'ecoflow-api-data',
    title: 'EcoFlow API Data',
    tags: ['ecoflow', 'api', 'power'],
    from: 'now-24h',
    panels: [
      gauge('Battery Level', '{soc_percent}', { unit: 'percent', min: 0, max: 100, steps: SOC }),
      remaining('Remaining Time', { w: 6, h: 6 }),
      gauge('Battery Temperature', '{bms_temp}', { unit: 'celsius', min: 0, max: 80, steps: TEMP }),
      gauge('Inverter Temperature', '{inv_out_temp}', {
        unit: 'celsius',
        min: 0,
        max: 80,
        steps: TEMP,
      }),
      gauge('Input Power', '{watts_in_sum}', {
        unit: 'watt',
        min: 0,
        max: 3000,
        steps: [
          [null, 'blue'],
          [100, 'green'],
        ],
      }),
      gauge('Output Power', '{watts_out_sum}', {
        unit: 'watt',
        min: 0,
        max: 3000,
        steps: [
          [null, 'green'],
          [1000, 'yellow'],
          [2000, 'red'],
        ],
      }),
      latest('Solar Input', '{pv_in_watts}', { unit: 'watt', h: 6 }),
      latest('AC Output', '{ac_out_watts}', { unit: 'watt', h: 6 }),
      latest('AC Input', '{inv_input_watts}', { unit: 'watt', h: 6 }),
      latest('12V Car Port', '{car_watts}', { unit: 'watt' }),
      latest('USB-C 1', '{typec1_watts}', { unit: 'watt' }),
      latest('USB-C 2', '{typec2_watts}', { unit: 'watt' }),
      latest('USB 1', '{usb1_watts}', { unit: 'watt' }),
      latest('USB 2', '{usb2_watts}', { unit: 'watt' }),
      latest('QC USB 1', '{qcusb1_watts}', { unit: 'watt' }),
      chart('Battery Level Over Time', 'percent', [line('Battery SOC', '{soc_percent}')]),
      chart('Remaining Runtime', 'h', [line('Runtime (hours)', '{remain_time_min} / 60.0')]),
      chart('Power Flow (Input vs Output)', 'watt', [
        line('Input', '{watts_in_sum}'),
        line('Output', '{watts_out_sum}'),
      ]),
      chart('Net Power (Charging/Discharging)', 'watt', [
        line('Net Power', '{watts_in_sum} - {watts_out_sum}'),
      ]),
      chart('Solar Input Power', 'watt', [line('Solar', '{pv_in_watts}')]),
      chart('AC Input/Output', 'watt', [
        line('AC Input', '{inv_input_watts}'),
        line('AC Output', '{ac_out_watts}'),
      ]),
      chart(
        'System Temperatures',
        'celsius',
        [
          line('Battery (BMS)', '{bms_temp}'),
          line('Inverter', '{inv_out_temp}'),
          line('MPPT', '{mppt_temp}'),
        ],
        { w: 24 },
      ),
    ],
  },
  {
    uid: 'paku-ecoflow-realtime',
    title: 'EcoFlow - Real-Time Overview',
    tags: ['ecoflow', 'power', 'realtime'],
    from: 'now-6h',
    panels: [
      gauge('Battery Level', '{soc_percent}', {
        unit: 'percent',
        min: 0,
        max: 100,
        steps: SOC,
        h: 8,
      }),
      chart(
        'Power Flow (Input/Output)',
        'watt',
        [line('Input (W)', '{watts_in_sum}'), line('Output (W)', '{watts_out_sum}')],
        { w: 18 },
      ),
      latest('Current Input', '{watts_in_sum}', { unit: 'watt', w: 6 }),
      latest('Current Output', '{watts_out_sum}', { unit: 'watt', w: 6 }),
      latest('Battery Temperature', '{bms_temp}', {
        unit: 'celsius',
        steps: [
          [null, 'green'],
          [30, 'yellow'],
          [40, 'red'],
        ],
        w: 6,
      }),
      latest('Battery Voltage', '{bms_vol}', { unit: 'mvolt', w: 6 }),
      chart('Battery Level History', 'percent', [line('Battery %', '{soc_percent}')]),
      chart('Temperature History', 'celsius', [
        line('Battery Temp', '{bms_temp}'),
        line('Min Cell Temp', '{bms_min_cell_temp}'),
        line('Max Cell Temp', '{bms_max_cell_temp}'),
      ]),
    ],
  },
  {
    uid: 'ecoflow-exporter-style',
    title: 'EcoFlow (Exporter Style)',
    tags: ['ecoflow', 'power', 'battery'],
    from: 'now-3h',
    panels: [
      online('Online Status'),
      gauge('Inverter IN Watts', '{watts_in_sum}', {
        unit: 'watt',
        min: 0,
        max: 2500,
        steps: [
          [null, 'green'],
          [1800, '#EAB839'],
          [2400, 'red'],
        ],
        w: 4,
        h: 4,
      }),
      latest('Inverter IN Volts', '{inv_ac_in_vol}', { unit: 'mvolt', decimals: 1 }),
      latest('Inverter IN Current', '{inv_ac_in_amp}', { unit: 'mamp' }),
      latest(
        'Charging Remaining Time',
        'CASE WHEN {watts_in_sum} > 0 THEN {remain_time_min} ELSE 0 END',
        { unit: 'm', decimals: 0, mappings: ENDLESS_MIN },
      ),
      latest('Full Capacity', '{bms_full_cap}', { unit: 'mamph' }),
      latest('BMS Current', 'ABS({bms_amp})', { unit: 'mamp', decimals: 0 }),
      latest('Battery Volts', '{bms_vol}', { unit: 'mvolt', decimals: 2 }),
      latest('MIN Cell Volts', '{bms_min_cell_vol}', { unit: 'mvolt', decimals: 3 }),
      latest('MAX Cell Volts', '{bms_max_cell_vol}', { unit: 'mvolt', decimals: 3 }),
      latest('Battery Level (SOC)', '{soc_percent}', {
        unit: 'percent',
        steps: [
          [null, 'red'],
          [10, 'yellow'],
          [30, 'green'],
        ],
      }),
      gauge('Inverter OUT Watts', '{watts_out_sum}', {
        unit: 'watt',
        min: 0,
        max: 2500,
        steps: [
          [null, 'green'],
          [1800, '#EAB839'],
          [2400, 'red'],
        ],
        w: 4,
        h: 4,
      }),
      latest('Inverter OUT Volts', '{inv_out_vol}', { unit: 'mvolt', decimals: 1 }),
      latest('Inverter OUT Current', '{inv_out_amp}', { unit: 'mamp' }),
      latest(
        'Discharging Remaining Time',
        'CASE WHEN {watts_out_sum} > 0 THEN {remain_time_min} ELSE 0 END',
        { unit: 'm', decimals: 0, mappings: ENDLESS_MIN },
      ),
      latest('Remain Capacity', '{bms_remain_cap}', { unit: 'mamph' }),
      latest('Battery Cycles', '{bms_cycles}', { unit: 'none', decimals: 0 }),
      latest('Inverter Temp', '{inv_out_temp}', {
        unit: 'celsius',
        steps: [
          [null, 'green'],
          [60, '#EAB839'],
          [65, 'red'],
        ],
      }),
      latest('MIN Cell Temp', '{bms_min_cell_temp}', {
        unit: 'celsius',
        steps: [
          [null, 'green'],
          [40, '#EAB839'],
          [50, 'red'],
        ],
      }),
      latest('MAX Cell Temp', '{bms_max_cell_temp}', {
        unit: 'celsius',
        steps: [
          [null, 'green'],
          [40, '#EAB839'],
          [50, 'red'],
        ],
      }),
      latest('Charge/Discharge Status', '{bms_amp}', {
        unit: 'none',
        w: 16,
        mappings: [
          { type: 'value', options: { '0': { text: 'Standby', color: 'yellow' } } },
          {
            type: 'range',
            options: { from: 0.5, to: null, result: { text: 'Charging', color: 'green' } },
          },
          {
            type: 'range',
            options: { from: null, to: -0.5, result: { text: 'Discharging', color: 'red' } },
          },
        ],
      }),
      chart('Battery Level', 'percent', [line('Battery Level', '{soc_percent}')]),
      chart(
        'I/O Watts',
        'watt',
        [line('Input Watts', '{watts_in_sum}'), line('Output Watts', '{watts_out_sum}')],
        {
          custom: { drawStyle: 'bars', fillOpacity: 100 },
          overrides: [
            {
              matcher: { id: 'byName', options: 'Output Watts' },
              properties: [{ id: 'custom.transform', value: 'negative-Y' }],
            },
          ],
        },
      ),
      chart('Remaining Time', 'm', [
        line(
          'Charging Remain Time',
          'CASE WHEN {watts_in_sum} > 0 THEN {remain_time_min} ELSE 0 END',
        ),
        line(
          'Discharging Remain Time',
          'CASE WHEN {watts_out_sum} > 0 THEN {remain_time_min} ELSE 0 END',
        ),
      ]),
      chart('I/O Volts', 'mvolt', [
        line('Inverter In', '{inv_ac_in_vol}', true),
        line('Inverter Out', '{inv_out_vol}', true),
      ]),
      chart('Temperature', 'celsius', [
        line('Inverter', '{inv_out_temp}', true),
        line('BMS', '{bms_temp}', true),
        line('Max Cell', '{bms_max_cell_temp}', true),
        line('Min Cell', '{bms_min_cell_temp}', true),
      ]),
      chart('Current', 'mamp', [
        line('AC IN Current', '{inv_ac_in_amp}'),
        line('Inverter OUT Current', '{inv_out_amp}'),
        line('BMS Current', 'ABS({bms_amp})'),
      ]),
      chart('USB Output', 'watt', [
        line('USB', '{usb_out_watts}'),
        line('TypeC', '{typec_out_watts}'),
      ]),
      chart('Battery Volts', 'mvolt', [
        line('BMS', '{bms_vol}'),
        line('MIN Cell', '{bms_min_cell_vol}'),
        line('MAX Cell', '{bms_max_cell_vol}'),
      ]),
      chart('Solar Power', 'watt', [line('Solar Power', '{pv_in_watts}')], { w: 24 }),
    ],
  },
  {
    uid: 'paku-ecoflow',
    title: 'EcoFlow Power Station Overview',
    tags: ['paku', 'ecoflow', 'power'],
    from: 'now-6h',
    panels: [
      latest('Battery Level', '{soc_percent}', {
        unit: 'percent',
        steps: [
          [null, 'red'],
          [20, 'orange'],
          [50, 'yellow'],
          [80, 'green'],
        ],
        w: 5,
        h: 6,
      }),
      latest('Current Input Power', '{watts_in_sum}', { unit: 'watt', w: 5, h: 6 }),
      latest('Current Output Power', '{watts_out_sum}', { unit: 'watt', w: 5, h: 6 }),
      latest('Time Remaining', '{remain_time_min}', {
        unit: 'm',
        mappings: ENDLESS_MIN,
        w: 5,
        h: 6,
      }),
      latest('Solar Input', '{pv_in_watts}', { unit: 'watt', h: 6 }),
      chart('Battery Level Over Time', 'percent', [line('Battery %', '{soc_percent}')]),
      chart('Power In/Out', 'watt', [
        line('Input (W)', '{watts_in_sum}'),
        line('Output (W)', '{watts_out_sum}'),
      ]),
      chart('Solar Input Over Time', 'watt', [line('Solar Input (W)', '{pv_in_watts}')]),
      chart('Output Breakdown', 'watt', [
        line('AC Output (W)', '{ac_out_watts}'),
        line('DC Output (W)', '{dc_out_watts}'),
        line('USB-C (W)', '{typec_out_watts}'),
        line('USB-A (W)', '{usb_out_watts}'),
      ]),
      chart('Net Power (Input - Output)', 'watt', [
        line('Net Power (W)', '{watts_in_sum} - {watts_out_sum}'),
      ]),
      valuePanel({
        type: 'stat',
        title: 'Power Statistics (Last Hour)',
        w: 12,
        h: 8,
        unit: 'watt',
        sql: `SELECT ROUND(AVG(watts_out_sum))::float8 AS "Avg Output", MAX(watts_out_sum)::float8 AS "Peak Output", ROUND(AVG(watts_in_sum))::float8 AS "Avg Input", MAX(watts_in_sum)::float8 AS "Peak Input" FROM ecoflow_measurements WHERE device_sn = '$device_sn' AND ts >= NOW() - INTERVAL '1 hour'`,
      }),
      tablePanel({
        title: 'Recent Measurements',
        sql: `SELECT ts AS "Time", soc_percent AS "Battery %", watts_in_sum AS "Input (W)", watts_out_sum AS "Output (W)", pv_in_watts AS "Solar (W)", remain_time_min AS "Remain (min)", ac_out_watts AS "AC Out (W)", dc_out_watts AS "DC Out (W)", typec_out_watts AS "USB-C (W)", usb_out_watts AS "USB-A (W)" FROM ecoflow_measurements WHERE device_sn = '$device_sn' ORDER BY ts DESC LIMIT 20`,
      }),
    ],
  },
  {
    uid: 'ecoflow-realtime',
    title: 'EcoFlow Real-Time',
    tags: ['ecoflow', 'realtime'],
    from: 'now-6h',
    panels: [
      gauge('Battery %', '{soc_percent}', {
        unit: 'percent',
        min: 0,
        max: 100,
        steps: [
          [null, 'red'],
          [20, 'orange'],
          [50, 'green'],
        ],
      }),
      latest('Input Power', '{watts_in_sum}', { unit: 'watt', w: 6, h: 6 }),
      latest('Output Power', '{watts_out_sum}', { unit: 'watt', w: 6, h: 6 }),
      latest('Time Remaining', '{remain_time_min}', {
        unit: 'm',
        mappings: ENDLESS_MIN,
        w: 6,
        h: 6,
      }),
      tablePanel({
        title: 'Recent Measurements',
        sql: `SELECT ts AS "Time", soc_percent AS "Battery %", watts_in_sum AS "Input (W)", watts_out_sum AS "Output (W)" FROM ecoflow_measurements WHERE device_sn = '$device_sn' ORDER BY ts DESC LIMIT 10`,
      }),
      chart('Battery History', 'percent', [line('Battery %', '{soc_percent}')]),
      chart('Power Flow', 'watt', [
        line('Input (W)', '{watts_in_sum}'),
        line('Output (W)', '{watts_out_sum}'),
      ]),
    ],
  },
  {
    uid: 'ecoflow-unified',
    title: 'EcoFlow Unified Dashboard',
    tags: ['ecoflow', 'unified', 'power'],
    from: 'now-24h',
    panels: [
      gauge('Battery Level', '{soc_percent}', { unit: 'percent', min: 0, max: 100, steps: SOC }),
      gauge('Input Power', '{watts_in_sum}', {
        unit: 'watt',
        min: 0,
        max: 3000,
        steps: [
          [null, 'blue'],
          [100, 'green'],
        ],
      }),
      gauge('Output Power', '{watts_out_sum}', {
        unit: 'watt',
        min: 0,
        max: 3000,
        steps: [
          [null, 'green'],
          [1000, 'yellow'],
          [2000, 'red'],
        ],
      }),
      gauge('Battery Temperature', '{bms_temp}', { unit: 'celsius', min: 0, max: 80, steps: TEMP }),
      remaining('Remaining Time'),
      latest('Solar Input', '{pv_in_watts}', { unit: 'watt' }),
      latest('AC Output', '{ac_out_watts}', { unit: 'watt' }),
      latest('AC Input', '{inv_input_watts}', { unit: 'watt' }),
      latest('Inverter Temp', '{inv_out_temp}', { unit: 'celsius' }),
      latest('MPPT Temp', '{mppt_temp}', { unit: 'celsius' }),
      chart(
        'Battery Level & Runtime History',
        'short',
        [
          line('Battery SOC (%)', '{soc_percent}'),
          line('Runtime (hours)', '{remain_time_min} / 60.0'),
        ],
        { w: 24 },
      ),
      chart(
        'Power Flow: Input, Output, and Net',
        'watt',
        [
          line('Input Power', '{watts_in_sum}'),
          line('Output Power', '{watts_out_sum}'),
          line('Net Power (In-Out)', '{watts_in_sum} - {watts_out_sum}'),
        ],
        { w: 24 },
      ),
      chart('Power Sources (Solar & AC)', 'watt', [
        line('Solar Input', '{pv_in_watts}'),
        line('AC Input', '{inv_input_watts}'),
      ]),
      chart('AC & DC Output', 'watt', [
        line('AC Output', '{ac_out_watts}'),
        line('Car 12V', '{car_watts}'),
        line('USB-C Total', '{typec1_watts} + {typec2_watts}'),
        line('USB Total', '{usb1_watts} + {usb2_watts} + {qcusb1_watts} + {qcusb2_watts}'),
      ]),
      chart(
        'System Temperatures',
        'celsius',
        [
          line('Battery (BMS)', '{bms_temp}'),
          line('Inverter', '{inv_out_temp}'),
          line('MPPT/Solar Controller', '{mppt_temp}'),
        ],
        { w: 24 },
      ),
    ],
  },
]

/** The legacy dashboards as Grafana dashboard JSON, by file name (`<uid>.json`). */
export function legacyDashboards(): Map<string, Record<string, unknown>> {
  return new Map(
    LEGACY.map((d) => [
      `${d.uid}.json`,
      {
        uid: d.uid,
        title: d.title,
        description:
          'From the old stack\'s "EcoFlow — Legacy" folder, kept under its uid so links and bookmarks keep working. The same readings, and more, are in EcoFlow — Yleiskatsaus and EcoFlow — Täydellinen.',
        tags: [...d.tags, 'legacy'],
        timezone: 'browser',
        refresh: '30s',
        schemaVersion: 39,
        version: 1,
        editable: false,
        time: { from: d.from, to: 'now' },
        templating: { list: [DEVICE_SN_VARIABLE] },
        panels: layout(d.panels),
      },
    ]),
  )
}

/** A dashboard file's exact text. */
export const dashboardText = (d: unknown) => JSON.stringify(d, null, 2) + '\n'

/** Replaces the legacy directory of the provisioning tree at `root` with the generated dashboards. */
export function writeLegacyDashboards(root = grafanaDir()): string[] {
  const dir = join(root, LEGACY_DIR)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  for (const [name, d] of legacyDashboards()) writeFileSync(join(dir, name), dashboardText(d))
  return readdirSync(dir).sort()
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const f of writeLegacyDashboards()) console.log(`wrote ${join(LEGACY_DIR, f)}`)
}

/**
 * Quota (flat dotted keys from `quota/all`) → the old stack's ecoflow_measurements columns
 * (docs/compatibility.md, "Quota columns and units"),
 * normalised per device family so every row is in the same units: W, °C, mV, mA, mAh, minutes.
 * Quirks (docs/ecoflow.md, "Units and quirks"): Delta Pro reports solar input in deci-watts; PowerStream reports
 * watts, volts and temperatures ×10. A missing or null field is NULL, never an aborted row.
 */
import { ECOFLOW_INTEGER_COLUMNS, ECOFLOW_QUOTA_COLUMNS } from '../db/index.js'

export const FAMILIES = ['delta_pro', 'delta2', 'powerstream', 'unknown'] as const
export type Family = (typeof FAMILIES)[number]

export const COLUMNS = ECOFLOW_QUOTA_COLUMNS
export type Column = (typeof COLUMNS)[number]
export type Columns = Record<Column, number | null>

/** The retained `paku/ecoflow/{sn}/power` payload (docs/compatibility.md, "The power summary topic"); Waveshare boards read it. */
export type PowerSummary = {
  soc: number
  solar_w: number
  ac_in_w: number
  ac_out_w: number
  dc_out_w: number
  watts_in: number
  watts_out: number
}

/** The family from the product name of device/list, else from the keys the device reports. */
export function detectFamily(
  productName: string | undefined,
  quota: Record<string, unknown>,
): Family {
  const name = (productName ?? '').toLowerCase().replace(/[\s_-]+/g, '')
  if (name.includes('deltapro') || name.includes('deltamax')) return 'delta_pro'
  if (name.includes('powerstream')) return 'powerstream'
  if (name.includes('delta2') || name.includes('river2')) return 'delta2'
  if ('bmsMaster.soc' in quota) return 'delta_pro'
  if ('bms_bmsStatus.soc' in quota) return 'delta2'
  if ('20_1.batSoc' in quota) return 'powerstream'
  return 'unknown'
}

type Get = (key: string, scale?: number) => number | null

/** Numbers only: a string, boolean, null or NaN is "no value" (NULL), not a crash. */
function reader(q: Record<string, unknown>): Get {
  return (key, scale = 1) => {
    const v = q[key]
    return typeof v === 'number' && Number.isFinite(v) ? v * scale : null
  }
}

/** Sum of the present values; NULL only when none is present. */
function sum(...values: Array<number | null>): number | null {
  const present = values.filter((v): v is number => v !== null)
  return present.length === 0 ? null : present.reduce((a, b) => a + b, 0)
}

function pdOutputs(g: Get) {
  const car = g('pd.carWatts')
  const usb1 = g('pd.usb1Watts')
  const usb2 = g('pd.usb2Watts')
  const qc1 = g('pd.qcUsb1Watts')
  const qc2 = g('pd.qcUsb2Watts')
  const c1 = g('pd.typec1Watts')
  const c2 = g('pd.typec2Watts')
  return {
    car_watts: car,
    usb1_watts: usb1,
    usb2_watts: usb2,
    qcusb1_watts: qc1,
    qcusb2_watts: qc2,
    typec1_watts: c1,
    typec2_watts: c2,
    // As the old collector and its dashboards define them: DC excludes Type-C (docs/compatibility.md,
    // "Quota columns and units").
    dc_out_watts: sum(car, usb1, usb2, qc1, qc2),
    typec_out_watts: sum(c1, c2),
    usb_out_watts: sum(usb1, usb2, qc1, qc2),
  }
}

function batteryAndInverter(g: Get, bms: string) {
  return {
    soc_percent: g(`${bms}.soc`),
    bms_temp: g(`${bms}.temp`),
    bms_max_cell_temp: g(`${bms}.maxCellTemp`),
    bms_min_cell_temp: g(`${bms}.minCellTemp`),
    bms_amp: g(`${bms}.amp`),
    bms_vol: g(`${bms}.vol`),
    bms_min_cell_vol: g(`${bms}.minCellVol`),
    bms_max_cell_vol: g(`${bms}.maxCellVol`),
    bms_remain_cap: g(`${bms}.remainCap`),
    bms_full_cap: g(`${bms}.fullCap`),
    bms_cycles: g(`${bms}.cycles`),
    remain_time_min: g('pd.remainTime'),
    watts_in_sum: g('pd.wattsInSum'),
    watts_out_sum: g('pd.wattsOutSum'),
    ac_out_watts: g('inv.outputWatts'),
    inv_input_watts: g('inv.inputWatts'),
    inv_out_temp: g('inv.outTemp'),
    mppt_temp: g('mppt.mpptTemp'),
    inv_ac_in_vol: g('inv.acInVol'),
    inv_out_vol: g('inv.invOutVol'),
    inv_ac_in_amp: g('inv.acInAmp'),
    inv_out_amp: g('inv.invOutAmp'),
    ...pdOutputs(g),
  }
}

const EMPTY: Columns = Object.fromEntries(COLUMNS.map((c) => [c, null])) as Columns

/** Maps one quota/all answer to the row's columns and the MQTT power summary. */
export function mapQuota(
  family: Family,
  quota: Record<string, unknown>,
): { columns: Columns; summary: PowerSummary } {
  const g = reader(quota)
  let partial: Partial<Columns>
  switch (family) {
    case 'delta_pro':
      // mppt.inWatts is deci-watts on the Delta Pro (the old collector stored it ×10).
      partial = { ...batteryAndInverter(g, 'bmsMaster'), pv_in_watts: g('mppt.inWatts', 0.1) }
      break
    case 'delta2':
      partial = { ...batteryAndInverter(g, 'bms_bmsStatus'), pv_in_watts: g('mppt.inWatts') }
      partial.soc_percent ??= g('pd.soc')
      break
    case 'powerstream': {
      const pv = sum(g('20_1.pv1InputWatts', 0.1), g('20_1.pv2InputWatts', 0.1))
      const out = g('20_1.invOutputWatts', 0.1)
      partial = {
        soc_percent: g('20_1.batSoc'),
        pv_in_watts: pv,
        watts_in_sum: pv,
        ac_out_watts: out,
        watts_out_sum: out,
        inv_out_temp: g('20_1.invTemp', 0.1),
        bms_temp: g('20_1.batTemp', 0.1),
        // Volts ×10 (decivolts) → millivolts; currents are already mA.
        bms_vol: g('20_1.batInputVolt', 100),
        bms_amp: g('20_1.batInputCur'),
        inv_out_amp: g('20_1.invOutputCur'),
      }
      break
    }
    default:
      partial = { ...batteryAndInverter(g, 'bms_bmsStatus'), pv_in_watts: g('mppt.inWatts') }
  }
  const columns = { ...EMPTY }
  for (const c of COLUMNS) {
    const v = partial[c]
    columns[c] =
      v === undefined || v === null
        ? null
        : ECOFLOW_INTEGER_COLUMNS.has(c)
          ? Math.round(v)
          : Math.round(v * 1000) / 1000
  }
  const z = (v: number | null) => v ?? 0
  const summary: PowerSummary = {
    soc: z(columns.soc_percent),
    solar_w: z(columns.pv_in_watts),
    ac_in_w: z(columns.inv_input_watts),
    ac_out_w: z(columns.ac_out_watts),
    // The MQTT summary has always included Type-C in DC out (docs/compatibility.md, "The power summary topic").
    dc_out_w: z(columns.dc_out_watts) + z(columns.typec_out_watts),
    watts_in: z(columns.watts_in_sum),
    watts_out: z(columns.watts_out_sum),
  }
  return { columns, summary }
}

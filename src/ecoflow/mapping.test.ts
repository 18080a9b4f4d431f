import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { detectFamily, mapQuota } from './mapping.js'

const fixture = (name: string) =>
  JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')) as Record<
    string,
    unknown
  >

describe('EcoFlow quota mapping', () => {
  const families: Array<{ name: string; product: string | undefined; file: string; want: string }> =
    [
      {
        name: 'detects Delta Pro by product name',
        product: 'DELTA Pro',
        file: 'delta-pro-quota.json',
        want: 'delta_pro',
      },
      {
        name: 'detects Delta 2 by product name',
        product: 'DELTA 2',
        file: 'delta-2-quota.json',
        want: 'delta2',
      },
      {
        name: 'detects River 2 Pro as the Delta 2 family',
        product: 'RIVER 2 Pro',
        file: 'river-2-pro-quota.json',
        want: 'delta2',
      },
      {
        name: 'detects PowerStream by product name',
        product: 'PowerStream',
        file: 'powerstream-quota.json',
        want: 'powerstream',
      },
      {
        name: 'detects Delta Pro by its keys when the name is unknown',
        product: undefined,
        file: 'delta-pro-quota.json',
        want: 'delta_pro',
      },
      {
        name: 'detects the Delta 2 family by its keys',
        product: 'Mystery',
        file: 'delta-2-quota.json',
        want: 'delta2',
      },
      {
        name: 'detects PowerStream by its keys',
        product: '',
        file: 'powerstream-quota.json',
        want: 'powerstream',
      },
    ]
  for (const c of families)
    it(c.name, () => assert.equal(detectFamily(c.product, fixture(c.file)), c.want))
  it('calls anything else unknown', () =>
    assert.equal(detectFamily('Glacier', { 'x.y': 1 }), 'unknown'))

  it('maps Delta Pro like the old collector, with solar input converted from deci-watts', () => {
    const { columns, summary } = mapQuota('delta_pro', fixture('delta-pro-quota.json'))
    assert.equal(columns.soc_percent, 87)
    assert.equal(columns.pv_in_watts, 412, 'mppt.inWatts 4120 dW → 412 W')
    assert.equal(columns.dc_out_watts, 24 + 5 + 0 + 12 + 0, 'DC excludes Type-C')
    assert.equal(columns.typec_out_watts, 30)
    assert.equal(columns.usb_out_watts, 17)
    assert.equal(columns.inv_out_vol, 230120, 'mV stays mV')
    assert.equal(columns.bms_amp, -1830)
    assert.equal(columns.bms_cycles, 142)
    assert.equal(columns.remain_time_min, 612)
    assert.deepEqual(summary, {
      soc: 87,
      solar_w: 412,
      ac_in_w: 0,
      ac_out_w: 25,
      dc_out_w: 71,
      watts_in: 412,
      watts_out: 96,
    })
  })

  it('maps the Delta 2 family from bms_bmsStatus keys (solar already in W) and keeps a null field from aborting the row', () => {
    const { columns } = mapQuota('delta2', fixture('delta-2-quota.json'))
    assert.equal(columns.soc_percent, 64)
    assert.equal(columns.pv_in_watts, 180)
    assert.equal(columns.qcusb2_watts, null)
    assert.equal(columns.dc_out_watts, 25, 'the null is skipped, not fatal')
    assert.equal(columns.bms_vol, 51800)
    assert.equal(columns.remain_time_min, -240, 'signed: minutes to empty')
  })

  it('maps PowerStream ×10 quirks to W, mV and °C', () => {
    const { columns, summary } = mapQuota('powerstream', fixture('powerstream-quota.json'))
    assert.equal(columns.pv_in_watts, 211, '(1234 + 876) / 10')
    assert.equal(columns.ac_out_watts, 180)
    assert.equal(columns.inv_out_temp, 41.2)
    assert.equal(columns.bms_vol, 51200, '512 dV → 51,200 mV')
    assert.equal(columns.bms_amp, -1500)
    assert.equal(summary.solar_w, 211)
  })

  it('writes NULLs, not garbage, for wrong types and unknown models', () => {
    const { columns, summary } = mapQuota('unknown', {
      'pd.wattsInSum': '12',
      'bms_bmsStatus.soc': Number.NaN,
      'inv.outputWatts': true,
    })
    assert.equal(columns.watts_in_sum, null)
    assert.equal(columns.soc_percent, null)
    assert.equal(columns.ac_out_watts, null)
    assert.deepEqual(summary, {
      soc: 0,
      solar_w: 0,
      ac_in_w: 0,
      ac_out_w: 0,
      dc_out_w: 0,
      watts_in: 0,
      watts_out: 0,
    })
  })
})

import * as v from 'valibot'
import type { Family } from './mapping.js'

/** The common controls, validated before anything is sent to EcoFlow. */
export const ControlRequest = v.variant('action', [
  v.strictObject({
    action: v.picklist(['ac_output', 'dc_output', 'usb_output']),
    value: v.boolean('value must be true or false'),
  }),
  v.strictObject({
    action: v.literal('charge_limit'),
    value: v.pipe(
      v.number('value must be a number'),
      v.integer('value must be a whole percentage'),
      v.minValue(50, 'charge limit must be 50–100 %'),
      v.maxValue(100, 'charge limit must be 50–100 %'),
    ),
  }),
  v.strictObject({
    action: v.literal('ac_charge_watts'),
    value: v.pipe(
      v.number('value must be a number'),
      v.integer('value must be whole watts'),
      v.minValue(100, 'AC charging must be at least 100 W'),
    ),
  }),
])
export type ControlRequest = v.InferOutput<typeof ControlRequest>

// Upper AC charging limits per family (W): Delta Pro 2900, Delta 2 Max 2400 (Delta 2: 1200, River 2: 360 — the device clamps).
const MAX_AC_CHARGE: Partial<Record<Family, number>> = { delta_pro: 2900, delta2: 2400 }

/**
 * The PUT /iot-open/sign/device/quota body for a control on a device family (docs/ecoflow.md, "Controls":
 * Delta Pro uses cmdSet/id, the Delta 2 / River 2 family moduleType/operateType). Returns an error
 * message for a control the family does not have.
 */
export function controlBody(
  family: Family,
  sn: string,
  c: ControlRequest,
): { body: Record<string, unknown> } | { error: string } {
  const on = c.value === true ? 1 : 0
  if (c.action === 'ac_charge_watts') {
    const max = MAX_AC_CHARGE[family]
    if (max !== undefined && (c.value as number) > max)
      return { error: `AC charging for ${family} is at most ${max} W` }
  }
  if (family === 'delta_pro') {
    switch (c.action) {
      case 'ac_output':
        return { body: { sn, params: { cmdSet: 32, id: 66, enabled: on } } }
      case 'dc_output':
        return { body: { sn, params: { cmdSet: 32, id: 81, enabled: on } } }
      case 'charge_limit':
        return { body: { sn, params: { cmdSet: 32, id: 49, maxChgSoc: c.value } } }
      case 'ac_charge_watts':
        return { body: { sn, params: { cmdSet: 32, id: 69, slowChgPower: c.value } } }
      default:
        return { error: `${c.action} is not available on the Delta Pro through the Open API` }
    }
  }
  if (family === 'delta2') {
    switch (c.action) {
      case 'ac_output':
        // 255 / -1 mean "leave as is" for the X-Boost, voltage and frequency settings.
        return {
          body: {
            sn,
            moduleType: 5,
            operateType: 'acOutCfg',
            params: { enabled: on, xboost: 255, out_voltage: -1, out_freq: 255 },
          },
        }
      case 'dc_output':
        return { body: { sn, moduleType: 5, operateType: 'mpptCar', params: { enabled: on } } }
      case 'usb_output':
        return { body: { sn, moduleType: 1, operateType: 'dcOutCfg', params: { enabled: on } } }
      case 'charge_limit':
        return {
          body: { sn, moduleType: 2, operateType: 'upsConfig', params: { maxChgSoc: c.value } },
        }
      case 'ac_charge_watts':
        return {
          body: {
            sn,
            moduleType: 5,
            operateType: 'acChgCfg',
            params: { chgWatts: c.value, chgPauseFlag: 255 },
          },
        }
    }
  }
  return { error: `controls are not supported for ${family} devices` }
}

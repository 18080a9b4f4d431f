export type RuuviOptions = {
  site: string
  /** Sensor locations; each becomes `ruuvi_{location}` on `{site}/sensors/ruuvi_{location}/data`. */
  locations: string[]
  /** Also publish the legacy flat payload on `{site}/ruuvi/{location}` (the old emulator's topic). */
  legacy: boolean
  random?: () => number
}

type SensorState = {
  t: number
  rh: number
  p: number
  battery: number
  movement: number
  seq: number
}

/**
 * RuuviTag-like readings: a slow random walk per sensor, in the canonical `…/data` shape paku-core sends
 * (docs/compatibility.md, "Sensor data") and, with `legacy`, the old emulator's flat payload
 * ("Legacy flat Ruuvi payloads" and "Emulators" there).
 */
export function createRuuviEmulator(opts: RuuviOptions) {
  const rnd = opts.random ?? Math.random
  const state = new Map<string, SensorState>()
  for (const loc of opts.locations) {
    state.set(loc, {
      t: 18 + rnd() * 7,
      rh: 35 + rnd() * 20,
      p: 990 + rnd() * 30,
      battery: 2800 + Math.round(rnd() * 200),
      movement: 0,
      seq: 0,
    })
  }
  /** A random step of up to ±step/2 from x, kept within [min, max]. */
  const walk = (x: number, { step, min, max }: { step: number; min: number; max: number }) =>
    Math.min(max, Math.max(min, x + (rnd() - 0.5) * step))
  const r1 = (x: number) => Math.round(x * 10) / 10

  return {
    /** One round of messages: [topic, payload] pairs. */
    tick(now = new Date()): Array<[string, string]> {
      const out: Array<[string, string]> = []
      for (const [loc, s] of state) {
        s.t = walk(s.t, { step: 0.4, min: 18, max: 25 })
        s.rh = walk(s.rh, { step: 1.5, min: 35, max: 55 })
        s.p = walk(s.p, { step: 0.6, min: 990, max: 1020 })
        s.seq = (s.seq + 1) % 65536
        if (rnd() < 0.05) s.movement = (s.movement + 1) % 256
        const timestamp = now.toISOString().replace(/\.\d{3}Z$/, 'Z')
        out.push([
          `${opts.site}/sensors/ruuvi_${loc}/data`,
          JSON.stringify({
            device_id: `ruuvi_${loc}`,
            location: loc,
            timestamp,
            metrics: {
              temperature_c: r1(s.t),
              humidity_percent: r1(s.rh),
              pressure_hpa: r1(s.p),
              battery_mv: s.battery,
            },
          }),
        ])
        if (opts.legacy) {
          const ax = Math.round((rnd() - 0.5) * 100)
          const ay = Math.round((rnd() - 0.5) * 100)
          const az = 980 + Math.round(rnd() * 70)
          out.push([
            `${opts.site}/ruuvi/${loc}`,
            JSON.stringify(
              {
                sensor_id: loc,
                temperature_c: r1(s.t),
                humidity_percent: r1(s.rh),
                pressure_hpa: r1(s.p),
                acceleration_x_mg: ax,
                acceleration_y_mg: ay,
                acceleration_z_mg: az,
                acceleration_total_mg: Math.round(Math.hypot(ax, ay, az)),
                tx_power_dbm: 4,
                movement_counter: s.movement,
                measurement_sequence: s.seq,
                battery_mv: s.battery,
                mac: 'AA:BB:CC:DD:EE:FF',
                timestamp,
              },
              null,
              2,
            ),
          ])
        }
      }
      return out
    },
  }
}

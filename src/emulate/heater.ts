import type { MqttClient } from 'mqtt'

export const HEATER_STATES = [
  'Off',
  'Starting',
  'Warming',
  'Running',
  'Ventilation',
  'ShuttingDown',
  'Cooling',
] as const
export type HeaterState = (typeof HEATER_STATES)[number]

export type HeaterOptions = {
  site: string
  deviceId: string
  random?: () => number
}

// Timed transitions of the old heater emulator (docs/compatibility.md, "Emulators"), in seconds.
const TIMED: Partial<Record<HeaterState, [number, HeaterState]>> = {
  Starting: [8, 'Warming'],
  Warming: [12, 'Running'],
  ShuttingDown: [6, 'Cooling'],
  Cooling: [10, 'Off'],
}

/**
 * The hydronic heater emulator: the old one's state machine and physics, publishing
 * `{site}/heater/{id}/data` (stored) and `{site}/heater/{id}/state` (HA, ignored by ingest), and obeying
 * `{site}/heater/{id}/cmd` (`{"cmd":"start","power":n}`, `stop`, `vent`, `reset`).
 */
export function createHeaterEmulator(opts: HeaterOptions) {
  const rnd = opts.random ?? Math.random
  const gauss = (sd: number) =>
    sd * Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd())
  let state: HeaterState = 'Off'
  let since = 0
  let power = 5
  let core = 25
  let coolant = 20
  let safety = true
  let t = 0
  let last: number | undefined

  const set = (s: HeaterState) => {
    state = s
    since = t
  }

  /** Applies a command payload; returns what happened for the log. */
  function command(raw: string): string {
    let cmd: { cmd?: unknown; power?: unknown }
    try {
      cmd = JSON.parse(raw) as typeof cmd
    } catch {
      return 'ignored: not JSON'
    }
    const p = typeof cmd.power === 'number' ? Math.max(0, Math.min(9, Math.round(cmd.power))) : 5
    switch (cmd.cmd) {
      case 'start':
        if (state !== 'Off') return `ignored: start while ${state}`
        power = p
        set('Starting')
        return `starting at power ${power}`
      case 'stop':
        if (!['Starting', 'Warming', 'Running', 'Ventilation'].includes(state))
          return `ignored: stop while ${state}`
        set('ShuttingDown')
        return 'shutting down'
      case 'vent':
        if (state !== 'Off') return `ignored: vent while ${state}`
        power = p
        set('Ventilation')
        return 'ventilating'
      case 'reset':
        safety = true
        return 'reset'
      default:
        return `ignored: unknown command ${JSON.stringify(cmd.cmd)}`
    }
  }

  return {
    get state(): HeaterState {
      return state
    },
    command,
    tick(now = new Date()): Array<[string, string]> {
      const ms = now.getTime()
      const dt = last === undefined ? 1 : Math.max(0, (ms - last) / 1000)
      last = ms
      t += dt
      const timed = TIMED[state]
      if (timed && t - since >= timed[0]) set(timed[1])
      switch (state) {
        case 'Off':
          core = Math.max(25, core - 0.5 * dt)
          coolant = Math.max(20, coolant - 0.3 * dt)
          break
        case 'Starting':
          core += 2 * dt
          break
        case 'Warming':
          core += 1.5 * dt
          coolant += 0.8 * dt
          break
        case 'Running':
          core += (80 + 3 * power - core) * 0.05
          coolant += (55 + 2 * power - coolant) * 0.03 + 0.3 * Math.sin(0.1 * t)
          break
        default:
          core = Math.max(25, core - 1 * dt)
          coolant = Math.max(20, coolant - 0.5 * dt)
      }
      const idle = state === 'Off' || state === 'Cooling'
      const flow = idle ? Math.max(0, 3 + gauss(0.2)) : Math.max(0.5, 3.5 + gauss(0.3))
      const battery = 12.6 + gauss(0.1)
      const r1 = (x: number) => Math.round(x * 10) / 10
      const metrics = {
        coolant_temp_c: r1(coolant),
        flow_lpm: r1(flow),
        battery_v: r1(battery),
        core_temp_c: Math.round(core),
        heater_state: state,
        safety_ok: safety ? 1 : 0,
        uart_online: 1,
        error: 'None',
      }
      const base = `${opts.site}/heater/${opts.deviceId}`
      return [
        [
          `${base}/data`,
          JSON.stringify({
            device_id: `heater_${opts.deviceId}`,
            location: 'van',
            timestamp: now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
            metrics,
          }),
        ],
        [
          `${base}/state`,
          JSON.stringify({
            ...metrics,
            state,
            safety_ok: safety,
            uart_online: true,
            running: state === 'Running',
          }),
        ],
      ]
    },
    async attach(client: MqttClient, onLog: (line: string) => void = () => {}): Promise<void> {
      const topic = `${opts.site}/heater/${opts.deviceId}/cmd`
      client.on('message', (t, payload) => {
        if (t === topic) onLog(`command: ${command(payload.toString())}`)
      })
      await client.subscribeAsync(topic, { qos: 0 })
    },
  }
}

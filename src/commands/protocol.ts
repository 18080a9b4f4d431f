import * as v from 'valibot'

/**
 * What a command looks like on the wire and what closes it (docs/compatibility.md, "Commands to devices").
 * paku-core has no acknowledgement topic, so a command is closed by the first of:
 *  - an explicit ack on `{site}/{system}/{device}/ack`: `{"command_id": "<id>", "ok"?: bool, "error"?: string}`
 *    (`ok: false` or a non-empty `error` → failed, otherwise acknowledged); paku sends the id as `command_id`;
 *  - the device's own report of the requested state, for firmware as it exists:
 *    control → a `status` whose `active_scenario` is the requested scenario;
 *    config → a `config/report` (or legacy `config`) containing every requested value;
 *    heater → a `paku/heater/{dev}/state` whose `state` shows the command took effect;
 *  - its TTL passing (→ expired).
 */

export const COMMAND_TYPES = ['control', 'config', 'heater'] as const
export const STATUSES = ['pending', 'acknowledged', 'failed', 'expired'] as const
export type CommandStatus = (typeof STATUSES)[number]

/** The device's MQTT buffer is 1024 bytes, topic and payload together (docs/compatibility.md, "Commands to devices"). */
export const MAX_DEVICE_MESSAGE = 1024
/** Scenarios the firmware knows; anything else means `default` (docs/compatibility.md, "Commands to devices"). */
const SCENARIOS = ['heater_active', 'power_save', 'default'] as const
const CONFIG_SECTIONS = ['timing', 'sensors', 'power', 'peripherals', 'ha'] as const

const DEVICE = /^[^/+#\u0000-\u001f]{1,128}$/
const common = {
  device_id: v.pipe(
    v.string('device_id must be a string'),
    v.regex(DEVICE, 'device_id must be 1–128 characters without / + # or control characters'),
  ),
  site_id: v.optional(
    v.pipe(
      v.string('site_id must be a string'),
      v.regex(DEVICE, 'site_id must be 1–128 characters without / + #'),
    ),
  ),
  ttl_seconds: v.optional(
    v.pipe(
      v.number('ttl_seconds must be a number'),
      v.integer('ttl_seconds must be an integer'),
      v.minValue(1, 'ttl_seconds must be at least 1'),
      v.maxValue(604_800, 'ttl_seconds must be at most 604800 (7 days)'),
      v.description('pending longer than this → expired (default 600)'),
    ),
  ),
}
const isPlainObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x)

export const NewCommand = v.variant(
  'type',
  [
    v.strictObject({
      type: v.literal('control'),
      scenario: v.picklist(SCENARIOS, `scenario must be one of ${SCENARIOS.join(', ')}`),
      ...common,
    }),
    v.strictObject({
      type: v.literal('config'),
      config: v.pipe(
        v.custom<Record<string, unknown>>(isPlainObject, 'config must be a JSON object'),
        v.check((c) => Object.keys(c).length > 0, 'config must not be empty'),
        v.check(
          (c) => Object.keys(c).every((k) => (CONFIG_SECTIONS as readonly string[]).includes(k)),
          `config may only hold ${CONFIG_SECTIONS.join(', ')}`,
        ),
        v.check(
          (c) => Object.values(c).every(isPlainObject),
          'each config section must be an object',
        ),
        // What the checks above demand, for the OpenAPI document (a custom schema has no JSON Schema).
        v.metadata({
          type: 'object',
          minProperties: 1,
          propertyNames: { enum: [...CONFIG_SECTIONS] },
          additionalProperties: { type: 'object' },
          description: 'partial config, by section',
        }),
      ),
      ...common,
    }),
    v.strictObject({
      type: v.literal('heater'),
      cmd: v.picklist(['start', 'stop', 'vent', 'reset'], 'cmd must be start, stop, vent or reset'),
      power: v.optional(
        v.pipe(
          v.number('power must be a number'),
          v.integer('power must be an integer'),
          v.minValue(0, 'power must be 0–9'),
          v.maxValue(9, 'power must be 0–9'),
        ),
      ),
      mode: v.optional(v.picklist(['power', 'thermostat'], 'mode must be power or thermostat')),
      target_temp: v.optional(
        v.pipe(
          v.number('target_temp must be a number'),
          v.finite(),
          v.minValue(0, 'target_temp must be 0–40'),
          v.maxValue(40, 'target_temp must be 0–40'),
        ),
      ),
      ...common,
    }),
  ],
  'type must be control, config or heater',
)
export type NewCommand = v.InferOutput<typeof NewCommand>

/** The query of GET /api/v1/commands. */
export const CommandsQuery = v.strictObject({
  device_id: v.optional(
    v.pipe(v.string(), v.maxLength(128, 'device_id is too long'), v.description('Device')),
  ),
  status: v.optional(
    v.pipe(
      v.picklist(STATUSES, `status must be one of ${STATUSES.join(', ')}`),
      v.description('pending, acknowledged, failed or expired'),
    ),
  ),
  limit: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^\d{1,5}$/, 'limit must be an integer'),
      // Named as a number, so the OpenAPI document shows it as one (util/openapi.ts).
      v.toNumber(),
      v.number(),
      v.integer('limit must be an integer'),
      v.minValue(1, 'limit must be at least 1'),
      v.maxValue(1000, 'limit must be at most 1000'),
      v.description('Page size, 1–1000 (default 100)'),
    ),
  ),
  cursor: v.optional(
    v.pipe(
      v.string(),
      v.maxLength(256, 'cursor is too long'),
      v.description('The `next` of the previous page'),
    ),
  ),
})

export type Wire = {
  siteId: string
  topic: string
  payload: Record<string, unknown>
  qos: 0 | 1
  retain: boolean
}

/** The topic, payload and flags for a command. Only config/set is retained (the docs use `-r`); a retained control or heater start would re-run on every reconnect. */
export function toWire(c: NewCommand, id: string): Wire {
  const siteId = c.site_id ?? 'paku'
  switch (c.type) {
    case 'control':
      return {
        siteId,
        topic: `${siteId}/edge/${c.device_id}/control`,
        payload: { scenario: c.scenario, command_id: id },
        qos: 1,
        retain: false,
      }
    case 'config':
      return {
        siteId,
        topic: `${siteId}/edge/${c.device_id}/config/set`,
        payload: { ...c.config, command_id: id },
        qos: 1,
        retain: true,
      }
    case 'heater': {
      const payload: Record<string, unknown> = { cmd: c.cmd }
      if (c.cmd === 'start' || c.cmd === 'vent') payload.power = c.power ?? 5
      if (c.mode !== undefined) payload.mode = c.mode
      if (c.target_temp !== undefined) payload.target_temp = c.target_temp
      payload.command_id = id
      return {
        siteId,
        topic: `${siteId}/heater/${c.device_id}/cmd`,
        payload,
        qos: 1,
        retain: false,
      }
    }
  }
}

export type Pending = {
  id: string
  siteId: string
  deviceId: string
  type: (typeof COMMAND_TYPES)[number]
  payload: Record<string, unknown>
  expiresAt: number
}
export type Verdict = { status: 'acknowledged' | 'failed'; error?: string; ack: unknown }

/** States a heater passes through after each cmd (the old emulator's state machine: docs/compatibility.md, "Emulators"). */
const HEATER_STATES: Record<string, readonly string[]> = {
  start: ['Starting', 'Warming', 'Running'],
  stop: ['ShuttingDown', 'Cooling', 'Off'],
  vent: ['Ventilation'],
}

/** Whether every value in `want` appears in `have` (objects compared key by key). */
export function contains(have: unknown, want: unknown): boolean {
  if (isPlainObject(want))
    return isPlainObject(have) && Object.entries(want).every(([k, w]) => contains(have[k], w))
  if (Array.isArray(want))
    return (
      Array.isArray(have) &&
      want.length === have.length &&
      want.every((w, i) => contains(have[i], w))
    )
  return Object.is(have, want)
}

/**
 * Whether an incoming message closes a pending command of the same device. `levels` is the topic split
 * at `/`, `body` its payload parsed as JSON (undefined if it was not JSON).
 */
/** Every topic verdict() can close a command by, as MQTT filters (an instance listens to these on the others). */
export const ACK_FILTERS = [
  '+/+/+/ack',
  '+/edge/+/status',
  '+/edge/+/config/report',
  '+/edge/+/config',
  '+/heater/+/state',
] as const

export function verdict(
  cmd: Pending,
  levels: readonly string[],
  body: unknown,
): Verdict | undefined {
  const [site, system, device, ...rest] = levels
  if (site !== cmd.siteId || device !== cmd.deviceId || !isPlainObject(body)) return undefined
  const kind = rest.join('/')
  if (kind === 'ack') {
    if (body.command_id !== cmd.id) return undefined
    const error =
      typeof body.error === 'string' && body.error !== ''
        ? body.error
        : body.ok === false
          ? 'device reported failure'
          : undefined
    return error ? { status: 'failed', error, ack: body } : { status: 'acknowledged', ack: body }
  }
  if (cmd.type === 'control' && system === 'edge' && kind === 'status') {
    return body.active_scenario === cmd.payload.scenario
      ? { status: 'acknowledged', ack: body }
      : undefined
  }
  if (
    cmd.type === 'config' &&
    system === 'edge' &&
    (kind === 'config/report' || kind === 'config')
  ) {
    const { command_id: _id, ...want } = cmd.payload
    return contains(body, want) ? { status: 'acknowledged', ack: body } : undefined
  }
  if (
    cmd.type === 'heater' &&
    system === 'heater' &&
    kind === 'state' &&
    typeof body.state === 'string'
  ) {
    const c = String(cmd.payload.cmd)
    if (c === 'reset')
      return body.safety_ok === true ? { status: 'acknowledged', ack: body } : undefined
    return HEATER_STATES[c]?.includes(body.state)
      ? { status: 'acknowledged', ack: body }
      : undefined
  }
  return undefined
}

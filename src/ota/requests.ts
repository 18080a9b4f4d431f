import { HTTPException } from 'hono/http-exception'
import * as v from 'valibot'
import { validate } from '../util/validate.js'
import { ROLLOUT_STATUSES, TARGET_TYPES } from './rollouts.js'

/** Device ids become MQTT topic levels (paku/edge/{id}/cmd/ota): no wildcards, separators or control characters. */
export const DeviceId = v.pipe(
  v.string('must be a string'),
  v.regex(/^[^/+#\s\u0000-\u001f]{1,128}$/, 'must be 1–128 characters without / + # or spaces'),
)
const Slug = v.pipe(
  v.string('must be a string'),
  v.regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1–64 letters, digits, . _ or -'),
)
const Percent = (min: number) =>
  v.pipe(
    v.number('must be a number'),
    v.integer('must be an integer'),
    v.minValue(min, `must be at least ${min}`),
    v.maxValue(100, 'must be at most 100'),
  )
const Count = v.pipe(
  v.number('must be a number'),
  v.integer('must be an integer'),
  v.minValue(1, 'must be at least 1'),
  v.maxValue(1_000_000, 'too large'),
)

/**
 * The old `/api/admin/rollout/create` body (docs/compatibility.md, "The old routes") and what paku adds:
 * stages, thresholds, groups, downgrade permission. Unknown fields are ignored as before;
 * `target_device_ids` (what the old CI workflow sent for single-device rollouts) counts as
 * `target_filter.device_ids`.
 */
export const RolloutBody = v.pipe(
  v.object(
    {
      name: v.pipe(
        v.string('must be a string'),
        v.regex(/^[^\u0000-\u001f]{1,128}$/, 'must be 1–128 printable characters'),
      ),
      firmware_version: v.pipe(
        v.string('must be a string'),
        v.minLength(1, 'must not be empty'),
        v.maxLength(64, 'must be at most 64 characters'),
      ),
      device_model: Slug,
      target_type: v.picklist(TARGET_TYPES, `must be one of ${TARGET_TYPES.join(', ')}`),
      target_filter: v.optional(
        v.nullable(
          v.object(
            {
              device_ids: v.optional(
                v.pipe(v.array(DeviceId), v.maxLength(10_000, 'at most 10000 devices')),
              ),
              mac_addresses: v.optional(
                v.array(
                  v.pipe(
                    v.string(),
                    v.regex(/^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$/, 'must be a MAC address'),
                  ),
                ),
              ),
              groups: v.optional(v.array(Slug)),
              group: v.optional(Slug),
              device_models: v.optional(v.array(Slug)),
            },
            'must be an object',
          ),
        ),
      ),
      target_device_ids: v.optional(
        v.pipe(v.array(DeviceId), v.maxLength(10_000, 'at most 10000 devices')),
      ),
      rollout_percentage: v.optional(Percent(0), 100),
      is_active: v.optional(v.boolean('must be true or false'), true),
      stages: v.optional(
        v.pipe(
          v.array(Percent(1)),
          v.minLength(1, 'must list at least one percentage'),
          v.maxLength(20, 'at most 20 stages'),
          v.check(
            (a) => a.every((p, i) => i === 0 || p > (a[i - 1] as number)),
            'must be increasing, e.g. [10, 25, 50, 100]',
          ),
        ),
      ),
      auto_advance: v.optional(v.boolean('must be true or false'), false),
      success_threshold_percent: v.optional(Percent(1), 100),
      error_threshold: v.optional(
        v.object(
          {
            count: v.optional(Count),
            percent: v.optional(Percent(1)),
            min_executed: v.optional(Count),
          },
          'must be an object',
        ),
        // A failing image stops itself: half of at least three finished updates failing pauses the rollout.
        { percent: 50, min_executed: 3 },
      ),
      allow_downgrade: v.optional(v.boolean('must be true or false')),
      force: v.optional(v.boolean('must be true or false')),
    },
    'body must be a JSON object',
  ),
  v.check(
    (b) =>
      b.target_type !== 'specific' ||
      (b.target_filter?.device_ids?.length ?? 0) +
        (b.target_device_ids?.length ?? 0) +
        (b.target_filter?.mac_addresses?.length ?? 0) >
        0,
    'target_type "specific" needs target_filter.device_ids (or target_device_ids)',
  ),
  v.check(
    (b) =>
      b.target_type !== 'group' ||
      (b.target_filter?.groups?.length ?? 0) > 0 ||
      b.target_filter?.group !== undefined,
    'target_type "group" needs target_filter.groups',
  ),
)
export type RolloutBody = v.InferOutput<typeof RolloutBody>

export const ActionBody = v.optional(
  v.object({ percentage: v.optional(Percent(1)) }, 'body must be a JSON object'),
  {},
)

export const DeviceBody = v.object(
  {
    device_model: Slug,
    metadata: v.optional(v.nullable(v.record(v.string(), v.unknown(), 'must be an object'))),
    groups: v.optional(v.array(Slug)),
  },
  'body must be a JSON object',
)

export const GroupBody = v.object(
  {
    description: v.optional(
      v.nullable(
        v.pipe(v.string('must be a string'), v.maxLength(1000, 'at most 1000 characters')),
      ),
    ),
    device_ids: v.optional(v.pipe(v.array(DeviceId), v.maxLength(100_000, 'too many devices'))),
  },
  'body must be a JSON object',
)

export const MembersBody = v.object(
  {
    device_ids: v.pipe(
      v.array(DeviceId),
      v.minLength(1, 'must list at least one device'),
      v.maxLength(100_000, 'too many devices'),
    ),
  },
  'body must be a JSON object',
)

/** The old `POST /api/device/{id}/update-status` body (docs/compatibility.md, "The old routes"). */
export const UpdateStatusBody = v.object(
  {
    device_id: v.optional(v.string()),
    firmware_version: v.pipe(
      v.string('must be a string'),
      v.minLength(1, 'must not be empty'),
      v.maxLength(64, 'must be at most 64 characters'),
    ),
    status: v.picklist(
      ['pending', 'downloading', 'downloaded', 'installing', 'success', 'failed', 'rolled_back'],
      'must be one of pending, downloading, downloaded, installing, success, failed, rolled_back',
    ),
    error_message: v.optional(
      v.nullable(
        v.pipe(v.string('must be a string'), v.maxLength(2000, 'at most 2000 characters')),
      ),
    ),
    progress_percent: v.optional(v.nullable(Percent(0))),
  },
  'body must be a JSON object',
)

export const RolloutStatusQuery = v.optional(
  v.picklist(ROLLOUT_STATUSES, `must be one of ${ROLLOUT_STATUSES.join(', ')}`),
)

/** Parses a JSON body against a schema; every problem becomes one 400 naming the field. An empty optional body is `undefined`. */
export async function jsonBody<S extends v.GenericSchema>(
  req: { text(): Promise<string> },
  schema: S,
): Promise<v.InferOutput<S>> {
  const text = await req.text()
  let body: unknown
  if (text.trim() !== '') {
    try {
      body = JSON.parse(text)
    } catch {
      throw new HTTPException(400, { message: 'body must be valid JSON' })
    }
  }
  return validate(schema, body)
}

/** Query booleans as FastAPI accepted them (the CI workflow sends is_signed=false). */
export function queryBool(raw: string | undefined, name: string): boolean | undefined {
  if (raw === undefined || raw === '') return undefined
  const s = raw.toLowerCase()
  if (['true', '1', 'yes', 'on'].includes(s)) return true
  if (['false', '0', 'no', 'off'].includes(s)) return false
  throw new HTTPException(400, { message: `${name}: must be true or false` })
}

/** An integer query parameter within bounds [min, max], or `def` when it is absent or empty. */
export function queryInt(
  raw: string | undefined,
  { name, def, min, max }: { name: string; def: number; min: number; max: number },
): number {
  if (raw === undefined || raw === '') return def
  if (!/^\d{1,9}$/.test(raw))
    throw new HTTPException(400, { message: `${name}: must be an integer` })
  const n = Number(raw)
  if (n < min || n > max)
    throw new HTTPException(400, { message: `${name}: must be between ${min} and ${max}` })
  return n
}

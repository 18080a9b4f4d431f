import { sql, type Kysely } from 'kysely'
import type { DB, Row } from '../db/index.js'
import type { SensorKey } from './acl.js'

export type SensorClaim = Row<'mqtt_sensor_claims'>

const keyOf = (k: SensorKey) => `${k.site}/${k.system}/${k.sensor}`
/** The claims table's key columns for a sensor. */
const claimKey = (k: SensorKey) => ({ site_id: k.site, system: k.system, sensor_id: k.sensor })
/** A cached owner is asked of the database again after this long (another instance, or an admin, may have moved it). */
const RECHECK_MS = 60_000

/**
 * Which gateway relays which sensor (`{site}/sensors/{id}/data`, `{site}/fridge/{id}/data`): the first
 * device that publishes a sensor owns it, and another device publishing it is refused, so one device's
 * credential cannot forge another's readings. An admin can move or release a claim. The database is the
 * truth (several instances share it); owners are cached for the hot path and looked up again before
 * a refusal and after RECHECK_MS.
 */
export function createSensorClaims(opts: { db: () => Kysely<DB>; now?: () => number }) {
  const now = opts.now ?? Date.now
  const cache = new Map<string, { owner: string; checkedAt: number }>()
  const counts = new Map<string, number>()

  async function lookup(k: SensorKey): Promise<string | undefined> {
    const row = await opts
      .db()
      .selectFrom('mqtt_sensor_claims')
      .select('device_id')
      .where((eb) => eb.and(claimKey(k)))
      .executeTakeFirst()
    const owner = row?.device_id
    remember(k, owner)
    return owner
  }

  function remember(k: SensorKey, owner: string | undefined): void {
    const key = keyOf(k)
    const before = cache.get(key)?.owner
    if (before !== undefined) counts.set(before, (counts.get(before) ?? 1) - 1)
    if (owner === undefined) cache.delete(key)
    else {
      cache.set(key, { owner, checkedAt: now() })
      counts.set(owner, (counts.get(owner) ?? 0) + 1)
    }
  }

  return {
    /** Loads every claim (one row per relayed sensor: a fleet's worth, not a telemetry stream). */
    async load(): Promise<void> {
      cache.clear()
      counts.clear()
      const rows = await opts
        .db()
        .selectFrom('mqtt_sensor_claims')
        .select(['site_id', 'system', 'sensor_id', 'device_id'])
        .execute()
      for (const row of rows)
        remember({ site: row.site_id, system: row.system, sensor: row.sensor_id }, row.device_id)
    },

    /** The cached owner, for decisions that cannot wait (delivery of a message). */
    ownerNow: (k: SensorKey): string | undefined => cache.get(keyOf(k))?.owner,

    /** Whether the cache says, recently enough, that `deviceId` owns the sensor (the publish path's fast answer). */
    ownsNow(deviceId: string, k: SensorKey): boolean {
      const cached = cache.get(keyOf(k))
      return (
        cached !== undefined && cached.owner === deviceId && now() - cached.checkedAt < RECHECK_MS
      )
    },

    /**
     * Whether `deviceId` may publish for this sensor: it owns it, or nobody does and it may claim one
     * more (`limit` claims per device). The claim is written before the answer.
     */
    async publish(
      deviceId: string,
      k: SensorKey,
      limit: number,
    ): Promise<'owner' | 'claimed' | 'taken' | 'limit'> {
      const cached = cache.get(keyOf(k))
      if (cached && cached.owner === deviceId && now() - cached.checkedAt < RECHECK_MS)
        return 'owner'
      const owner = await lookup(k)
      if (owner === deviceId) return 'owner'
      if (owner !== undefined) return 'taken'
      if ((counts.get(deviceId) ?? 0) >= limit) return 'limit'
      // A conflict is answered with the row as it stands (the no-op update makes RETURNING give it).
      const r = await sql<Row<'mqtt_sensor_claims', 'device_id'>>`
        INSERT INTO mqtt_sensor_claims (site_id, system, sensor_id, device_id) VALUES (${k.site}, ${k.system}, ${k.sensor}, ${deviceId})
        ON CONFLICT (site_id, system, sensor_id) DO UPDATE SET site_id = mqtt_sensor_claims.site_id
        RETURNING device_id`.execute(opts.db())
      const won = r.rows[0]?.device_id
      remember(k, won)
      return won === deviceId ? 'claimed' : 'taken'
    },

    /** Whether `deviceId` owns the sensor (subscribing to its commands); never claims. */
    async owns(deviceId: string, k: SensorKey): Promise<boolean> {
      const cached = cache.get(keyOf(k))
      if (cached && now() - cached.checkedAt < RECHECK_MS) return cached.owner === deviceId
      return (await lookup(k)) === deviceId
    },

    async list(filter: { deviceId?: string | undefined } = {}): Promise<SensorClaim[]> {
      let q = opts
        .db()
        .selectFrom('mqtt_sensor_claims')
        .select(['site_id', 'system', 'sensor_id', 'device_id', 'claimed_at', 'assigned_by'])
        .orderBy('site_id')
        .orderBy('system')
        .orderBy('sensor_id')
      if (filter.deviceId !== undefined) q = q.where('device_id', '=', filter.deviceId)
      return q.execute()
    },

    /** Gives a sensor to another gateway (an admin's decision, recorded with who made it). */
    async assign(k: SensorKey, deviceId: string, by: string): Promise<void> {
      await sql`
        INSERT INTO mqtt_sensor_claims (site_id, system, sensor_id, device_id, assigned_by) VALUES (${k.site}, ${k.system}, ${k.sensor}, ${deviceId}, ${by})
        ON CONFLICT (site_id, system, sensor_id) DO UPDATE SET device_id = EXCLUDED.device_id, assigned_by = EXCLUDED.assigned_by, claimed_at = NOW()`.execute(
        opts.db(),
      )
      remember(k, deviceId)
    },

    /** Frees a sensor: the next gateway to publish it claims it. */
    async release(k: SensorKey): Promise<boolean> {
      const r = await opts
        .db()
        .deleteFrom('mqtt_sensor_claims')
        .where((eb) => eb.and(claimKey(k)))
        .executeTakeFirst()
      remember(k, undefined)
      return r.numDeletedRows > 0n
    },
  }
}

export type SensorClaims = ReturnType<typeof createSensorClaims>

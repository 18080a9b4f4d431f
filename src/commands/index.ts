import { randomBytes } from 'node:crypto'
import { scope } from '../util/scope.js'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { sql, type Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import { readJson, validate } from '../util/validate.js'
import {
  CommandsQuery,
  MAX_DEVICE_MESSAGE,
  NewCommand,
  toWire,
  verdict,
  type Pending,
  type Verdict,
} from './protocol.js'

export { ACK_FILTERS, NewCommand, toWire, verdict, contains, type Pending } from './protocol.js'
export { commandsOpenApi } from './openapi.js'

export type CommandsOptions = {
  db: () => Kysely<DB>
  log: Logger
  /** broker.publish: resolves once the broker has queued the message. */
  publish: (topic: string, payload: string, o: { qos: 0 | 1; retain: boolean }) => Promise<void>
  /** Default TTL of a command in seconds (10 minutes). */
  defaultTtlSeconds?: number
  /** How often pending commands are checked for expiry. */
  sweepMs?: number
  /**
   * With several instances (docs/scaling.md): how often to re-read the pending commands from the
   * database, so commands sent through another instance (one that may have died since) are closed
   * and expired here too. Off by default: a single instance knows every command it sent.
   */
  reloadMs?: number
}

export type CommandRow = {
  id: string
  site_id: string
  device_id: string
  type: string
  topic: string
  payload: Record<string, unknown>
  qos: number
  retain: boolean
  status: string
  created_at: Date
  expires_at: Date
  closed_at: Date | null
  closed_by: string | null
  ack: unknown
  error: string | null
  created_by: string | null
}

/**
 * Device commands: POST /api/v1/commands publishes a control, config/set or heater command with an id
 * and records it as pending; observe() sees every incoming MQTT message and closes the command that
 * message acknowledges (protocol.ts says exactly what does); a sweep expires the rest after their TTL.
 * Open commands are kept in memory by device, so observe() costs a map lookup for everyone else.
 */
export function createCommands(opts: CommandsOptions) {
  const { db, log } = opts
  const defaultTtl = opts.defaultTtlSeconds ?? 600
  const pending = new Map<string, Pending[]>()
  let sweep: NodeJS.Timeout | undefined
  let sweeping: Promise<void> | undefined
  const counts = { sent: 0, acknowledged: 0, failed: 0, expired: 0 }

  const add = (p: Pending) => pending.set(p.deviceId, [...(pending.get(p.deviceId) ?? []), p])
  const remove = (p: Pending) => {
    const rest = (pending.get(p.deviceId) ?? []).filter((x) => x.id !== p.id)
    if (rest.length > 0) pending.set(p.deviceId, rest)
    else pending.delete(p.deviceId)
  }

  async function close(p: Pending, v: Verdict, by: string): Promise<void> {
    remove(p)
    const r = await sql`
      UPDATE device_commands SET status = ${v.status}, closed_at = NOW(), closed_by = ${by}, ack = ${v.ack === undefined ? null : JSON.stringify(v.ack)}::jsonb, error = ${v.error ?? null}
      WHERE id = ${p.id} AND status = 'pending'`.execute(db())
    if (Number(r.numAffectedRows ?? 0) > 0) counts[v.status]++
  }

  async function expire(): Promise<void> {
    const t = Date.now()
    const due = [...pending.values()].flat().filter((p) => p.expiresAt <= t)
    if (due.length === 0) return
    for (const p of due) remove(p)
    const r = await sql`
      UPDATE device_commands SET status = 'expired', closed_at = NOW(), closed_by = 'ttl', error = 'no acknowledgement before the TTL'
      WHERE status = 'pending' AND id = ANY(${due.map((p) => p.id)}::text[])`.execute(db())
    counts.expired += Number(r.numAffectedRows ?? 0)
  }

  async function knownDevice(siteId: string, deviceId: string): Promise<boolean> {
    const r = await sql<{ known: boolean }>`
      SELECT EXISTS (SELECT 1 FROM devices WHERE device_id = ${deviceId})
        OR EXISTS (SELECT 1 FROM measurements WHERE site_id = ${siteId} AND device_id = ${deviceId}) AS known`.execute(
      db(),
    )
    return r.rows[0]?.known === true
  }

  const routes = new Hono()
  routes.post('/api/v1/commands', scope('command'), async (c) => {
    const body = await readJson(
      c.req,
      'body must be JSON: {"device_id": …, "type": "control"|"config"|"heater", …}',
    )
    const cmd = validate(NewCommand, body)
    const id = `cmd_${randomBytes(12).toString('base64url')}`
    const wire = toWire(cmd, id)
    const text = JSON.stringify(wire.payload)
    if (Buffer.byteLength(wire.topic) + Buffer.byteLength(text) > MAX_DEVICE_MESSAGE - 16) {
      throw new HTTPException(400, {
        message: `topic and payload must fit the device's ${MAX_DEVICE_MESSAGE}-byte MQTT buffer`,
      })
    }
    if (!(await knownDevice(wire.siteId, cmd.device_id)))
      throw new HTTPException(404, {
        message: `no device ${cmd.device_id} (it has sent no status or data)`,
      })
    const ttl = cmd.ttl_seconds ?? defaultTtl
    const createdBy = (c.get('keyName' as never) as string | undefined) ?? null
    // Recorded before publishing, so an acknowledgement that arrives at once finds it.
    const row = await sql<CommandRow>`
      INSERT INTO device_commands (id, site_id, device_id, type, topic, payload, qos, retain, expires_at, created_by)
      VALUES (${id}, ${wire.siteId}, ${cmd.device_id}, ${cmd.type}, ${wire.topic}, ${text}::jsonb, ${wire.qos}, ${wire.retain}, NOW() + make_interval(secs => ${ttl}), ${createdBy})
      RETURNING *`.execute(db())
    const created = row.rows[0] as CommandRow
    const p: Pending = {
      id,
      siteId: wire.siteId,
      deviceId: cmd.device_id,
      type: cmd.type,
      payload: wire.payload,
      expiresAt: created.expires_at.getTime(),
    }
    add(p)
    try {
      await opts.publish(wire.topic, text, { qos: wire.qos, retain: wire.retain })
      counts.sent++
    } catch (err) {
      await close(
        p,
        { status: 'failed', error: `publish failed: ${errorText(err)}`, ack: undefined },
        'publish',
      )
      throw new HTTPException(503, { message: 'command not published: broker unavailable' })
    }
    return c.json({ command: await get(id) }, 202)
  })

  routes.get('/api/v1/commands', scope('read'), async (c) => {
    const q = validate(CommandsQuery, c.req.query())
    const limit = q.limit ?? 100
    let after = sql`true`
    if (q.cursor !== undefined) {
      const [ts, id] = decode(q.cursor)
      after = sql`(created_at, id) < (${ts}::timestamptz, ${id})`
    }
    const r = await sql<CommandRow & { key: string }>`
      SELECT *, created_at::text AS key FROM device_commands
      WHERE ${q.device_id === undefined ? sql`true` : sql`device_id = ${q.device_id}`} AND ${q.status === undefined ? sql`true` : sql`status = ${q.status}`} AND ${after}
      ORDER BY created_at DESC, id DESC LIMIT ${limit + 1}`.execute(db())
    const rows = r.rows.slice(0, limit)
    const last = rows[rows.length - 1]
    const next =
      r.rows.length > limit && last
        ? Buffer.from(JSON.stringify([last.key, last.id])).toString('base64url')
        : null
    return c.json({ items: rows.map(({ key: _k, ...row }) => row), next })
  })

  routes.get('/api/v1/commands/:id', scope('read'), async (c) => {
    const row = await get(c.req.param('id'))
    if (!row)
      throw new HTTPException(404, { message: `no command ${c.req.param('id').slice(0, 64)}` })
    return c.json({ command: row })
  })

  /** Adds the pending commands in the database that memory does not hold yet. */
  async function load(): Promise<void> {
    const r = await sql<{
      id: string
      site_id: string
      device_id: string
      type: Pending['type']
      payload: Record<string, unknown>
      expires_at: Date
    }>`
      SELECT id, site_id, device_id, type, payload, expires_at FROM device_commands WHERE status = 'pending' ORDER BY created_at`.execute(
      db(),
    )
    const known = new Set([...pending.values()].flat().map((p) => p.id))
    for (const row of r.rows)
      if (!known.has(row.id))
        add({
          id: row.id,
          siteId: row.site_id,
          deviceId: row.device_id,
          type: row.type,
          payload: row.payload,
          expiresAt: row.expires_at.getTime(),
        })
  }

  async function get(id: string): Promise<CommandRow | undefined> {
    const r = await sql<CommandRow>`SELECT * FROM device_commands WHERE id = ${id}`.execute(db())
    return r.rows[0]
  }

  return {
    name: 'commands',
    routes,
    /** Sees every incoming message (app.ts); closes what it acknowledges. Never throws, never blocks. */
    observe(msg: { topic: string; payload: Buffer }): void {
      if (pending.size === 0) return
      const levels = msg.topic.split('/')
      const open = levels[2] === undefined ? undefined : pending.get(levels[2])
      if (!open) return
      let body: unknown
      try {
        body = JSON.parse(msg.payload.toString('utf8'))
      } catch {
        return
      }
      for (const p of open) {
        const v = verdict(p, levels, body)
        if (!v) continue
        close(p, v, msg.topic).catch((err: unknown) =>
          log.warn('command not closed', { id: p.id, err: errorText(err) }),
        )
        // One message closes one command: the oldest it matches (a device reports its state once).
        break
      }
    },
    async start(): Promise<void> {
      await load()
      let loadedAt = Date.now()
      sweep = setInterval(() => {
        if (sweeping) return
        const reload = opts.reloadMs !== undefined && Date.now() - loadedAt >= opts.reloadMs
        if (reload) loadedAt = Date.now()
        sweeping = (reload ? load() : Promise.resolve())
          .then(() => expire())
          .catch((err: unknown) => log.warn('command expiry failed', { err: errorText(err) }))
          .finally(() => (sweeping = undefined))
      }, opts.sweepMs ?? 1000)
      sweep.unref()
    },
    async stop(): Promise<void> {
      clearInterval(sweep)
      await sweeping
      pending.clear()
    },
    health: () => ({ pending: [...pending.values()].reduce((n, l) => n + l.length, 0), ...counts }),
  }
}

function decode(cursor: string): [string, string] {
  try {
    const k = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown
    if (
      Array.isArray(k) &&
      k.length === 2 &&
      typeof k[0] === 'string' &&
      /^\d{4}-\d{2}-\d{2} [\d:.+-]{8,32}$/.test(k[0]) &&
      typeof k[1] === 'string'
    )
      return [k[0], k[1]]
  } catch {
    // falls through
  }
  throw new HTTPException(400, { message: 'cursor: not a cursor this API returned' })
}

export type Commands = ReturnType<typeof createCommands>

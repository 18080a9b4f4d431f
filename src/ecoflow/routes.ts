import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import { scope } from '../util/scope.js'
import { readJson, validate } from '../util/validate.js'
import type { EcoflowClient } from './client.js'
import { controlBody, ControlRequest } from './controls.js'
import { failureText, type DeviceState } from './devices.js'

const NOT_CONFIGURED =
  'EcoFlow is not configured: set PAKU_ECOFLOW_ACCESS_KEY and PAKU_ECOFLOW_SECRET_KEY'

/**
 * The admin routes: the devices and the poller's state, a poll now (skipping any backoff), and a
 * control command to one device.
 */
export function ecoflowRoutes(o: {
  enabled: boolean
  config: Config['ecoflow']
  log: Logger
  devices: ReadonlyMap<string, DeviceState>
  status: () => { state: string; lastError: string | null }
  pollNow: () => Promise<void>
  /** The signed client while the poller runs. */
  client: () => EcoflowClient | undefined
}): Hono {
  const { enabled, config, log, devices } = o
  const routes = new Hono()
  routes.get('/api/admin/ecoflow/devices', scope('read'), (c) =>
    c.json({ enabled, ...o.status(), devices: [...devices.values()] }),
  )
  routes.post('/api/admin/ecoflow/poll', scope('admin'), async (c) => {
    if (!enabled) throw new HTTPException(409, { message: NOT_CONFIGURED })
    await o.pollNow()
    return c.json({ ...o.status(), devices: [...devices.values()] })
  })
  routes.post('/api/admin/ecoflow/devices/:sn/control', scope('admin'), async (c) => {
    const client = o.client()
    if (!enabled || !client) throw new HTTPException(409, { message: NOT_CONFIGURED })
    const sn = c.req.param('sn')
    const d = devices.get(sn)
    if (!d) throw new HTTPException(404, { message: `no EcoFlow device ${sn}` })
    const body = await readJson(c.req, 'body must be JSON: {"action": …, "value": …}')
    const request = validate(ControlRequest, body)
    if (!d.family)
      throw new HTTPException(409, {
        message: `device ${sn} has not been polled yet; its model is unknown`,
      })
    const built = controlBody(d.family, sn, request)
    if ('error' in built) throw new HTTPException(400, { message: built.error })
    try {
      await client.setQuota(built.body, AbortSignal.timeout(config.requestTimeoutMs))
    } catch (err) {
      const text = failureText(err)
      log.warn('EcoFlow control refused', { sn, action: request.action, err: text })
      throw new HTTPException(502, { message: `EcoFlow refused the command: ${text}` })
    }
    log.info('EcoFlow control sent', { sn, action: request.action, value: request.value })
    return c.json({ ok: true, sn, action: request.action, value: request.value, sent: built.body })
  })
  return routes
}

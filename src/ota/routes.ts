import { Hono } from 'hono'
import { createAdminRoutes } from './admin-routes.js'
import { createDeviceRoutes } from './device-routes.js'
import type { RoutesOptions } from './route-parts.js'

export { releaseView } from './route-parts.js'

/**
 * Every OTA route: the admin routes (under /api/admin, behind a key with the route's scope) and the
 * device routes (open, rate-limited, also under ota.routePrefix).
 */
export function createOtaRoutes(o: RoutesOptions): Hono {
  return new Hono().route('/', createAdminRoutes(o)).route('/', createDeviceRoutes(o))
}

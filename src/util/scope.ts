import type { Hono, MiddlewareHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'

/**
 * What a key may do; `admin` includes all the others. `ingest` is for devices posting telemetry over
 * HTTP (a key that can do nothing else); `command` sends device commands.
 */
export const SCOPES = ['read', 'upload', 'rollout', 'ingest', 'command', 'admin'] as const
export type Scope = (typeof SCOPES)[number]

/** A route's scope check, carrying the scope it declares so that the routes can be listed and audited. */
export type ScopeCheck = MiddlewareHandler & { readonly scope: Scope }

/**
 * Declares the scope a key route needs, next to its definition: `routes.get(path, scope('read'), handler)`.
 * The key middleware (src/http/auth.ts) has already checked the key and put its scopes in the context;
 * without them (the middleware not mounted) the route refuses, so a forgotten mount fails closed.
 */
export function scope(need: Scope): ScopeCheck {
  const check: MiddlewareHandler = async (c, next) => {
    const scopes = (c.get as (k: string) => unknown)('keyScopes') as readonly Scope[] | undefined
    if (!scopes) throw new HTTPException(401, { message: 'missing or wrong API key' })
    if (!scopes.includes(need) && !scopes.includes('admin'))
      throw new HTTPException(403, { message: `this key lacks the "${need}" scope` })
    await next()
  }
  return Object.assign(check, { scope: need })
}

/** Every route of an app with the scope it declares (undefined where it declares none), in registration order. */
export function routeScopes(
  app: Hono,
): Array<{ method: string; path: string; scope: Scope | undefined }> {
  const out = new Map<string, { method: string; path: string; scope: Scope | undefined }>()
  for (const r of app.routes) {
    // Middleware mounted with app.use() is registered for every method; it declares nothing for a route.
    if (r.method === 'ALL') continue
    const key = `${r.method} ${r.path}`
    const declared = (r.handler as Partial<ScopeCheck>).scope
    const seen = out.get(key)
    if (!seen) out.set(key, { method: r.method, path: r.path, scope: declared })
    else if (declared !== undefined) seen.scope = declared
  }
  return [...out.values()]
}

import { randomUUID } from 'node:crypto'
import type { Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type { Logger } from '../log/index.js'

/** The one error body every route returns (PocketBase's shape). */
export type ErrorBody = { status: number; message: string; data?: unknown; requestId?: string }

/**
 * Expected client errors are HTTPExceptions and keep their status and message; anything else is
 * logged with its stack and becomes `500 internal error` with a request id, so no SQL or file path leaks.
 */
export function errorHandler(log: Logger) {
  return (err: Error, c: Context) => {
    if (err instanceof HTTPException) {
      // A route that built its own body (the ErrorBody shape with `data`) passes it as `res`.
      if (err.res) return err.getResponse()
      const status = err.status as ContentfulStatusCode
      return c.json<ErrorBody>({ status, message: err.message || defaultMessage(status) }, status)
    }
    const requestId = randomUUID()
    log.error('request failed', {
      requestId,
      method: c.req.method,
      path: c.req.path,
      err: err.stack ?? String(err),
    })
    return c.json<ErrorBody>({ status: 500, message: 'internal error', requestId }, 500)
  }
}

export function notFound(c: Context) {
  return c.json<ErrorBody>(
    { status: 404, message: `no route for ${c.req.method} ${c.req.path}` },
    404,
  )
}

function defaultMessage(status: number): string {
  return status === 413
    ? 'request body too large'
    : status === 401
      ? 'unauthorized'
      : status === 503
        ? 'unavailable'
        : status === 429
          ? 'too many requests'
          : 'bad request'
}

import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'

/**
 * The console at /ui/: static HTML, CSS and vanilla JS modules (and uPlot, src/assets.ts) served by paku
 * itself (no CDN, no build step). The page holds no secret; it asks for an admin key (or creates the
 * first one from the setup link, src/http/setup.ts), keeps it in sessionStorage and sends it as
 * X-API-Key to the same /api routes curl uses.
 */

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
}

// Everything from this origin only: no inline script or style, no framing, no form posts elsewhere.
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

export type UiOptions = {
  /** The UI's files by name (index.html, app.js, style.css): from src/ui/static or the executable's assets. */
  files: () => ReadonlyMap<string, Buffer>
}

export function createUi(opts: UiOptions) {
  let cache: ReadonlyMap<string, Buffer> | undefined
  const files = () => (cache ??= opts.files())
  const routes = new Hono()
  routes.get('/ui', (c) => c.redirect('/ui/', 301))
  routes.get('/ui/', (c) => serve(c.req.header('if-none-match'), 'index.html'))
  routes.get('/ui/:name', (c) => serve(c.req.header('if-none-match'), c.req.param('name')))

  function serve(ifNoneMatch: string | undefined, name: string): Response {
    const ext = name.slice(name.lastIndexOf('.'))
    const body = files().get(name)
    const type = TYPES[ext]
    if (!body || !type) throw new HTTPException(404, { message: `no UI file ${name.slice(0, 64)}` })
    const headers = {
      'content-type': type,
      'content-security-policy': CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      // Revalidated every time: an upgraded binary must not run last version's script.
      'cache-control': 'no-cache',
      etag: `"${etagOf(body)}"`,
    }
    if (ifNoneMatch === headers.etag) return new Response(null, { status: 304, headers })
    return new Response(new Uint8Array(body), { status: 200, headers })
  }
  return { routes }
}

function etagOf(b: Buffer): string {
  let h = 2166136261
  for (const byte of b) h = Math.imul(h ^ byte, 16777619) >>> 0
  return `${b.length.toString(16)}-${h.toString(16)}`
}

/** Reads the route tables of docs/http-api.md, for the tests that hold them against the routes paku serves. */

/** `/api/v1/devices/{id}` (docs, OpenAPI) and `/api/v1/devices/:id` (Hono) as one key: `GET /api/v1/devices/:id`. */
export const routeKey = (method: string, path: string) =>
  `${method.toUpperCase()} ${path.replace(/\{([A-Za-z_]+)\}/g, ':$1')}`

/** The route rows of the doc's tables: | `METHOD /path` | auth | what |. */
export function documentedRoutes(doc: string): Array<{ key: string; auth: string; line: number }> {
  const out: Array<{ key: string; auth: string; line: number }> = []
  doc.split('\n').forEach((text, i) => {
    const m = /^\| `(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\/[^`]*)` \| ([^|]*?) \|/.exec(text)
    if (m)
      out.push({
        key: routeKey(m[1] as string, m[2] as string),
        auth: (m[3] as string).trim(),
        line: i + 1,
      })
  })
  return out
}

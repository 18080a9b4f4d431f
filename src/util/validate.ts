import { HTTPException } from 'hono/http-exception'
import * as v from 'valibot'

/** Checks a request value against a schema; every problem becomes one 400 line naming its field (`path: message`). */
export function validate<S extends v.GenericSchema>(schema: S, input: unknown): v.InferOutput<S> {
  const parsed = v.safeParse(schema, input)
  if (!parsed.success) throw new HTTPException(400, { message: parsed.issues.map((i) => `${v.getDotPath(i) ?? 'body'}: ${i.message}`).join('; ') })
  return parsed.output
}

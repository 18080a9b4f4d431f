import { HTTPException } from 'hono/http-exception'
import * as v from 'valibot'

/** Checks a request value against a schema; every problem becomes one 400 line naming its field (`path: message`). */
export function validate<S extends v.GenericSchema>(schema: S, input: unknown): v.InferOutput<S> {
  const parsed = v.safeParse(schema, input)
  if (!parsed.success)
    throw new HTTPException(400, {
      message: parsed.issues.map((i) => `${v.getDotPath(i) ?? 'body'}: ${i.message}`).join('; '),
    })
  return parsed.output
}

/** The request's JSON body; a body that is not JSON is a 400 with `message` (say which shape is expected). */
export async function readJson(
  req: { json(): Promise<unknown> },
  message: string,
): Promise<unknown> {
  try {
    return await req.json()
  } catch {
    throw new HTTPException(400, { message })
  }
}

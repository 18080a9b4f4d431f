import { toJsonSchema, type ConversionConfig } from '@valibot/to-json-schema'
import type * as v from 'valibot'

/**
 * OpenAPI operations whose parameters and request bodies are converted from the valibot schemas the
 * routes validate with (@valibot/to-json-schema), so the document cannot promise what a route refuses.
 * Each module that serves /api routes describes its own; api/openapi.ts assembles the document.
 */

export type Obj = Record<string, unknown>

/** A query-string schema: an object whose entries are the parameters. */
export type QuerySchema = v.GenericSchema & { readonly entries: v.ObjectEntries }

export type Operation = {
  method: 'get' | 'post'
  /** In OpenAPI form: `/api/v1/devices/{id}`. */
  path: string
  summary: string
  /** The schema the route parses its query string with. */
  query?: QuerySchema
  /** Path parameters, described here: the routes read them without a schema. */
  pathParams?: Record<string, string>
  /** The schema the route validates its JSON body with. */
  body?: v.GenericSchema
  responses: Obj
  /** Served without a key. */
  open?: true
}

/** What one module adds to the document: its operations and the response schemas they refer to. */
export type OpenApiPart = { operations: readonly Operation[]; schemas?: Record<string, Obj> }

const CONVERSION: ConversionConfig = {
  // OpenAPI 3.1's schema dialect.
  target: 'draft-2020-12',
  // A request is described as the client sends it: a pipe is converted up to its first transform.
  typeMode: 'input',
  // check() runs a function, which JSON Schema cannot express: the field's description says what it
  // demands. finite() needs nothing: a JSON number is always finite.
  ignoreActions: ['check', 'finite'],
  // custom() is a function too: the metadata in its pipe says what it takes. Anything else the
  // converter does not support throws, so the document never silently drops a rule.
  overrideSchema: ({ valibotSchema }) => (valibotSchema.type === 'custom' ? {} : undefined),
}

/** The JSON Schema of what a valibot schema accepts (as a request sends it). Throws on what it cannot convert. */
export function jsonSchema(
  schema: v.GenericSchema,
  typeMode: ConversionConfig['typeMode'] = 'input',
): Obj {
  const { $schema: _, ...rest } = toJsonSchema(schema, { ...CONVERSION, typeMode })
  return rest
}

type PipeItem = { type: string; pipe?: readonly PipeItem[]; wrapped?: PipeItem }
const pipeItems = (s: PipeItem): PipeItem[] =>
  (s.pipe ?? []).flatMap((i) => (i.pipe ? pipeItems(i) : [i]))

/**
 * A query parameter's schema. A query string carries text: a parameter whose pipe turns it into a
 * number (`v.toNumber()` then `v.number()`) is documented as that number, with the checks after it.
 */
function parameterSchema(entry: v.GenericSchema): Obj {
  const inner = (entry as unknown as PipeItem).wrapped ?? (entry as unknown as PipeItem)
  const numeric = pipeItems(inner).some((i) => i.type === 'to_number')
  return jsonSchema(entry, numeric ? 'output' : 'input')
}

/** One OpenAPI parameter per entry of a query schema; the description moves from the schema to the parameter. */
export function queryParameters(schema: QuerySchema): Obj[] {
  const required = (jsonSchema(schema).required as string[] | undefined) ?? []
  return Object.entries(schema.entries).map(([name, entry]) => {
    const { description, ...s } = parameterSchema(entry)
    return {
      name,
      in: 'query',
      required: required.includes(name),
      ...(description === undefined ? {} : { description }),
      schema: s,
    }
  })
}

export const json = (schema: Obj): Obj => ({ 'application/json': { schema } })
export const ref = (name: string): Obj => ({ $ref: `#/components/schemas/${name}` })
export const errorRef = (name: string): Obj => ({ $ref: `#/components/responses/${name}` })

/** The operation object of the document. */
export function operationObject(op: Operation): Obj {
  const parameters = [
    ...Object.entries(op.pathParams ?? {}).map(([name, description]) => ({
      name,
      in: 'path',
      required: true,
      description,
      schema: { type: 'string' },
    })),
    ...(op.query ? queryParameters(op.query) : []),
  ]
  return {
    summary: op.summary,
    ...(op.open ? { security: [] } : {}),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(op.body ? { requestBody: { required: true, content: json(jsonSchema(op.body)) } } : {}),
    responses: op.responses,
  }
}

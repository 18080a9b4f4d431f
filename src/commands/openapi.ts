import { errorRef, json, ref, type OpenApiPart } from '../util/openapi.js'
import { CommandsQuery, NewCommand, STATUSES } from './protocol.js'

const one = (description: string) => ({
  description,
  content: json({ type: 'object', properties: { command: ref('Command') } }),
})
const nullable = (description?: string) => ({
  type: ['string', 'null'],
  ...(description ? { description } : {}),
})

/** The commands routes in the OpenAPI document of /api/v1: query and body from the schemas they validate with. */
export const commandsOpenApi: OpenApiPart = {
  operations: [
    {
      method: 'get',
      path: '/api/v1/commands',
      summary: 'Commands, newest first',
      query: CommandsQuery,
      responses: {
        '200': {
          description: 'A page of commands',
          content: json({
            type: 'object',
            properties: {
              items: { type: 'array', items: ref('Command') },
              next: nullable('cursor of the next page; null on the last'),
            },
            required: ['items', 'next'],
          }),
        },
        '400': errorRef('BadRequest'),
        '401': errorRef('Unauthorized'),
      },
    },
    {
      method: 'post',
      path: '/api/v1/commands',
      summary: 'Send a command or configuration to a device',
      body: NewCommand,
      responses: {
        '202': one('Published; pending until acknowledged'),
        '400': errorRef('BadRequest'),
        '401': errorRef('Unauthorized'),
        '404': errorRef('NotFound'),
        '503': { description: 'Broker unavailable', content: json(ref('Error')) },
      },
    },
    {
      method: 'get',
      path: '/api/v1/commands/{id}',
      summary: 'One command',
      pathParams: { id: 'Command id' },
      responses: {
        '200': one('The command'),
        '401': errorRef('Unauthorized'),
        '404': errorRef('NotFound'),
      },
    },
  ],
  schemas: {
    Command: {
      type: 'object',
      properties: {
        ...Object.fromEntries(
          ['id', 'device_id', 'type', 'topic', 'created_at', 'expires_at'].map((k) => [
            k,
            { type: 'string' },
          ]),
        ),
        payload: { type: 'object' },
        retain: { type: 'boolean' },
        status: { enum: [...STATUSES] },
        closed_at: nullable(),
        closed_by: nullable('ack topic, state topic, ttl or publish error'),
        ack: { type: ['object', 'null'] },
        error: nullable(),
        created_by: nullable(),
      },
    },
  },
}

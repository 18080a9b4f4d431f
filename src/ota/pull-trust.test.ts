import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { requestToken } from './pull-trust.js'

describe('requestToken', () => {
  const cases: Array<
    [
      name: string,
      query: string | undefined,
      authorization: string | undefined,
      token: string | undefined,
    ]
  > = [
    ['takes ?token= (all an HTTPUpdate client can set)', 'pkd_abc', undefined, 'pkd_abc'],
    ['takes Authorization: Bearer', undefined, 'Bearer pkd_abc', 'pkd_abc'],
    ['reads the scheme case-insensitively', undefined, 'bearer pkd_abc', 'pkd_abc'],
    ['prefers the query when both are there', 'pkd_query', 'Bearer pkd_header', 'pkd_query'],
    ['treats an empty ?token= as none', '', undefined, undefined],
    ['ignores another scheme', undefined, 'Basic dXNlcjpwYXNz', undefined],
    ['ignores a Bearer without a token', undefined, 'Bearer ', undefined],
    ['has none without either', undefined, undefined, undefined],
  ]
  for (const [name, query, authorization, token] of cases)
    it(name, () => assert.equal(requestToken(query, authorization), token))
})

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { ConfigSchema, type ConfigInput } from '../config/index.js'
import { openSettings } from './warnings.js'

const mqtt = (m: NonNullable<ConfigInput['mqtt']>) => v.parse(ConfigSchema, { mqtt: m }).mqtt
const messages = (m: NonNullable<ConfigInput['mqtt']>) => openSettings(mqtt(m)).map((w) => w.msg)

describe('start-up warnings about an open broker', () => {
  it('warns while the shared credential has full rights, not in device role or without one', () => {
    assert.match(
      messages({
        host: '127.0.0.1',
        ws: { host: '127.0.0.1' },
        sharedCredential: { username: 'edge', password: 'x' },
      }).join('\n'),
      /shared MQTT credential has full rights/,
    )
    assert.deepEqual(
      messages({
        host: '127.0.0.1',
        ws: { host: '127.0.0.1' },
        sharedCredential: { username: 'edge', password: 'x', role: 'device' },
      }),
      [],
    )
    assert.deepEqual(messages({ host: '127.0.0.1', ws: { host: '127.0.0.1' } }), [])
  })
  it('warns when anonymous clients are allowed on a listener other hosts can reach, naming it', () => {
    const w = openSettings(
      mqtt({ host: '127.0.0.1', allowAnonymous: true, ws: { host: '0.0.0.0' } }),
    )
    assert.equal(w.length, 1)
    assert.match(w[0]?.msg ?? '', /anonymous MQTT clients are allowed/)
    assert.deepEqual(w[0]?.fields, { listeners: ['0.0.0.0'], anonymousRole: 'readonly' })
    assert.deepEqual(
      messages({ host: '0.0.0.0', ws: { enabled: false }, allowAnonymous: false }),
      [],
      'closed: no warning',
    )
    assert.deepEqual(
      messages({ host: '127.0.0.1', ws: { host: '::1' }, allowAnonymous: true }),
      [],
      'loopback only: no warning',
    )
    assert.equal(
      messages({ host: '::', ws: { enabled: false }, allowAnonymous: true }).length,
      1,
      'all IPv6 interfaces',
    )
    assert.equal(
      messages({
        host: '127.0.0.1',
        ws: { enabled: false },
        tls: { enabled: true, certFile: 'c', keyFile: 'k' },
        allowAnonymous: true,
      }).length,
      1,
      'the TLS listener binds 0.0.0.0 by default',
    )
    assert.deepEqual(
      messages({
        host: '127.0.0.1',
        ws: { enabled: false },
        tls: { enabled: true, certFile: 'c', keyFile: 'k', allowAnonymous: false },
        allowAnonymous: true,
      }),
      [],
      'anonymous on loopback TCP only, TLS closed',
    )
    assert.equal(
      messages({
        host: '127.0.0.1',
        ws: { host: '0.0.0.0', allowAnonymous: true },
        allowAnonymous: false,
      }).length,
      1,
      'a listener that opens itself',
    )
  })
})

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { runEmulator } from './index.js'

describe('paku emulate against the real broker', () => {
  it('takes host, port, WebSocket path and percent-encoded credentials from --url', async (t) => {
    const databaseUrl = await testDatabase(t)
    const config = testConfig({
      databaseUrl,
      mqtt: {
        allowAnonymous: false,
        sharedCredential: { username: 'edge', password: 'p@ss:w/rd%' },
        ws: { path: '/custom-mqtt' },
      },
    })
    const { wsUrl } = await startApp(t, config)
    const port = new URL(wsUrl).port
    const lines: string[] = []
    const run = (url: string) =>
      runEmulator({
        kind: 'ruuvi',
        url,
        site: 'emu',
        devices: ['porch'],
        legacy: false,
        intervalMs: 10,
        count: 1,
        signal: new AbortController().signal,
        log: (line) => lines.push(line),
      })
    assert.equal(
      await run(`ws://edge:${encodeURIComponent('p@ss:w/rd%')}@127.0.0.1:${port}/custom-mqtt`),
      1,
    )
    const db = await sqlClient(t, databaseUrl)
    await eventually(
      async () =>
        (
          await db.query(
            `SELECT 1 FROM measurements WHERE site_id = 'emu' AND device_id = 'ruuvi_porch'`,
          )
        ).rowCount === 1 || undefined,
      { what: 'the emulated row' },
    )
    // The broker refuses a wrong password: the credentials really came from the URL.
    await assert.rejects(
      Promise.race([
        run(`ws://edge:wrong@127.0.0.1:${port}/custom-mqtt`),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error('no refusal within 5 s')), 5000),
        ),
      ]),
      /Not authorized|Bad username or password/i,
    )
  })
})

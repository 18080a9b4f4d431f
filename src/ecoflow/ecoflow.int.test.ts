import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { createEcoflowClient, EcoflowError } from './client.js'
import { startFakeOpenApi, type FakeDevice } from '../../scripts/test-support/fake-ecoflow-api.js'

const AK = 'AK_TEST'
const SK = 'SK_TEST'
const DEVICES: FakeDevice[] = [
  { sn: 'DCABZ8ZE1234567', productName: 'DELTA Pro', fixture: 'delta-pro-quota.json' },
  { sn: 'R331ZEB4ZE89012', productName: 'DELTA 2', fixture: 'delta-2-quota.json' },
  { sn: 'HW51ZOH4SF45678', productName: 'PowerStream', fixture: 'powerstream-quota.json' },
  { sn: 'R621ZEB5ZF34567', productName: 'RIVER 2 Pro', blocked: true },
]

async function fake(
  t: Parameters<typeof defer>[0],
  opts: Partial<Parameters<typeof startFakeOpenApi>[0]> = {},
) {
  const f = await startFakeOpenApi({ accessKey: AK, secretKey: SK, devices: DEVICES, ...opts })
  defer(t, () => f.close())
  return f
}

const client = (url: string, o: Partial<Parameters<typeof createEcoflowClient>[0]> = {}) =>
  createEcoflowClient({
    apiUrl: url,
    accessKey: AK,
    secretKey: SK,
    signing: 'auto',
    timeoutMs: 2000,
    ...o,
  })

const code = async (p: Promise<unknown>) => {
  try {
    await p
    return 'ok'
  } catch (err) {
    return err instanceof EcoflowError ? err.code : `unexpected ${String(err)}`
  }
}

describe('EcoFlow client against a fake Open API over HTTP', () => {
  it('lists devices and reads quotas with the documented signature', async (t) => {
    const f = await fake(t)
    const c = client(f.url)
    assert.deepEqual(
      (await c.deviceList()).map((d) => d.sn),
      DEVICES.map((d) => d.sn),
    )
    const q = await c.quotaAll('DCABZ8ZE1234567')
    assert.equal(q['bmsMaster.soc'], 87)
    assert.equal(c.signingForm, 'documented')
    assert.deepEqual(f.state.rejections, [])
  })

  it('reports EcoFlow error codes: 8513 wrong access key, 8521 wrong secret, and a blocked device', async (t) => {
    const f = await fake(t)
    assert.equal(await code(client(f.url, { accessKey: 'OTHER' }).deviceList()), '8513')
    assert.equal(
      await code(client(f.url, { secretKey: 'wrong', signing: 'documented' }).deviceList()),
      '8521',
    )
    const blocked = await client(f.url)
      .quotaAll('R621ZEB5ZF34567')
      .catch((e: Error) => e)
    assert.match((blocked as Error).message, /not allowed to get device info/)
  })

  it('falls back to the legacy signature by itself on 8521, and stays on it', async (t) => {
    const f = await fake(t, { accepts: ['legacy'] })
    let fellBack = 0
    const c = client(f.url, { onSigningFallback: () => fellBack++ })
    assert.equal((await c.quotaAll('DCABZ8ZE1234567'))['bmsMaster.soc'], 87)
    assert.equal(c.signingForm, 'legacy')
    await c.quotaAll('R331ZEB4ZE89012')
    assert.equal(fellBack, 1)
    assert.equal(
      await code(client(f.url, { signing: 'documented' }).quotaAll('DCABZ8ZE1234567')),
      '8521',
      'no fallback when pinned',
    )
  })

  it('turns slow answers, outages and broken JSON into clear errors', async (t) => {
    const f = await fake(t)
    f.state.delayMs = 500
    assert.equal(await code(client(f.url, { timeoutMs: 100 }).deviceList()), 'timeout')
    f.state.delayMs = 0
    f.state.mode = 'outage'
    assert.equal(await code(client(f.url).deviceList()), 'http_503')
    f.state.mode = 'badJson'
    assert.equal(await code(client(f.url).deviceList()), 'http_200')
    assert.equal(await code(client('http://127.0.0.1:1').deviceList()), 'network')
  })
})

describe('EcoFlow in the running app', () => {
  async function setup(
    t: Parameters<typeof defer>[0],
    ecoflow: Record<string, unknown> = {},
    devices = DEVICES,
  ) {
    const f = await fake(t, { devices })
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        http: { adminApiKey: 'ecoflow-admin-key-0123456789abcdef' },
        ecoflow: {
          accessKey: AK,
          secretKey: SK,
          apiUrl: f.url,
          pollSeconds: 3600,
          requestTimeoutMs: 1000,
          ...ecoflow,
        },
      }),
    )
    const db = await sqlClient(t, url)
    const api = (path: string, init: RequestInit = {}) =>
      fetch(`${sut.httpUrl}${path}`, {
        ...init,
        headers: {
          'x-api-key': 'ecoflow-admin-key-0123456789abcdef',
          'content-type': 'application/json',
          ...(init.headers as Record<string, string>),
        },
      })
    return { f, sut, db, api }
  }

  it('polls every device of the account at start-up, stores normalised rows with the raw quota, and republishes the power summary', async (t) => {
    const { sut, db } = await setup(t)
    await eventually(
      async () => (await db.query('SELECT 1 FROM ecoflow_measurements')).rowCount === 3,
      { what: 'three rows' },
    )
    const rows = (
      await db.query(
        `SELECT device_sn, model, soc_percent, pv_in_watts, dc_out_watts, typec_out_watts, bms_vol, raw->>'bmsMaster.soc' AS raw_soc FROM ecoflow_measurements ORDER BY device_sn`,
      )
    ).rows
    assert.deepEqual(rows, [
      {
        device_sn: 'DCABZ8ZE1234567',
        model: 'delta_pro',
        soc_percent: 87,
        pv_in_watts: 412,
        dc_out_watts: 41,
        typec_out_watts: 30,
        bms_vol: '52350',
        raw_soc: '87',
      },
      {
        device_sn: 'HW51ZOH4SF45678',
        model: 'powerstream',
        soc_percent: 55,
        pv_in_watts: 211,
        dc_out_watts: null,
        typec_out_watts: null,
        bms_vol: '51200',
        raw_soc: null,
      },
      {
        device_sn: 'R331ZEB4ZE89012',
        model: 'delta2',
        soc_percent: 64,
        pv_in_watts: 180,
        dc_out_watts: 25,
        typec_out_watts: 45,
        bms_vol: '51800',
        raw_soc: null,
      },
    ])
    const sub = await mqtt.connectAsync(sut.mqttUrl)
    defer(t, () => sub.endAsync())
    const got = new Promise<[string, string, boolean]>((resolve) =>
      sub.on('message', (topic, p, packet) => resolve([topic, p.toString(), packet.retain])),
    )
    await sub.subscribeAsync('paku/ecoflow/DCABZ8ZE1234567/power')
    assert.deepEqual(await got, [
      'paku/ecoflow/DCABZ8ZE1234567/power',
      '{"soc":87,"solar_w":412,"ac_in_w":0,"ac_out_w":25,"dc_out_w":71,"watts_in":412,"watts_out":96}',
      true,
    ])
    const health = (await (await fetch(`${sut.httpUrl}/health`)).json()) as {
      ecoflow: { state: string; devices: number }
    }
    assert.deepEqual(health.ecoflow, { enabled: true, state: 'ok', devices: 4, lastError: null })
  })

  it('lists devices with their state (the blocked one marked), and sends validated controls per model family', async (t) => {
    const { f, sut, db, api } = await setup(t)
    await eventually(
      async () => (await db.query('SELECT 1 FROM ecoflow_measurements')).rowCount === 3,
      { what: 'first poll' },
    )
    const list = (await (await api('/api/admin/ecoflow/devices')).json()) as {
      devices: Array<{ sn: string; family: string; blocked: boolean; summary: unknown }>
    }
    assert.deepEqual(
      list.devices.map((d) => [d.sn, d.family, d.blocked]),
      [
        ['DCABZ8ZE1234567', 'delta_pro', false],
        ['R331ZEB4ZE89012', 'delta2', false],
        ['HW51ZOH4SF45678', 'powerstream', false],
        ['R621ZEB5ZF34567', null, true],
      ],
    )
    const control = (sn: string, body: unknown) =>
      api(`/api/admin/ecoflow/devices/${sn}/control`, {
        method: 'POST',
        body: JSON.stringify(body),
      })
    assert.equal(
      (await control('DCABZ8ZE1234567', { action: 'ac_output', value: false })).status,
      200,
    )
    assert.equal(
      (await control('R331ZEB4ZE89012', { action: 'charge_limit', value: 90 })).status,
      200,
    )
    assert.equal(
      (await control('R331ZEB4ZE89012', { action: 'ac_charge_watts', value: 600 })).status,
      200,
    )
    assert.deepEqual(f.state.commands, [
      { sn: 'DCABZ8ZE1234567', params: { cmdSet: 32, id: 66, enabled: 0 } },
      { sn: 'R331ZEB4ZE89012', moduleType: 2, operateType: 'upsConfig', params: { maxChgSoc: 90 } },
      {
        sn: 'R331ZEB4ZE89012',
        moduleType: 5,
        operateType: 'acChgCfg',
        params: { chgWatts: 600, chgPauseFlag: 255 },
      },
    ])
    const bad: Array<[string, unknown, number, RegExp]> = [
      [
        'R331ZEB4ZE89012',
        { action: 'charge_limit', value: 30 },
        400,
        /charge limit must be 50–100 %/,
      ],
      ['R331ZEB4ZE89012', { action: 'ac_output', value: 'on' }, 400, /value must be true or false/],
      ['R331ZEB4ZE89012', { action: 'self_destruct', value: 1 }, 400, /action/],
      ['DCABZ8ZE1234567', { action: 'ac_charge_watts', value: 5000 }, 400, /at most 2900 W/],
      [
        'HW51ZOH4SF45678',
        { action: 'ac_output', value: true },
        400,
        /not supported for powerstream/,
      ],
      ['NOPE1234', { action: 'ac_output', value: true }, 404, /no EcoFlow device NOPE1234/],
    ]
    for (const [sn, body, status, message] of bad) {
      const res = await control(sn, body)
      assert.equal(res.status, status, JSON.stringify(body))
      assert.match(((await res.json()) as { message: string }).message, message)
    }
    const notJson = await api('/api/admin/ecoflow/devices/R331ZEB4ZE89012/control', {
      method: 'POST',
      body: '{oops',
    })
    assert.equal(notJson.status, 400)
    assert.equal(f.state.commands.length, 3, 'nothing invalid reached EcoFlow')
    assert.equal(
      (await fetch(`${sut.httpUrl}/api/admin/ecoflow/devices`)).status,
      401,
      'admin key required',
    )
  })

  it('backs off during an EcoFlow outage (no requests while waiting) and recovers', async (t) => {
    const { f, sut, db, api } = await setup(t, { devices: ['DCABZ8ZE1234567'] })
    await eventually(
      async () => (await db.query('SELECT 1 FROM ecoflow_measurements')).rowCount === 1,
      { what: 'first poll' },
    )
    f.state.mode = 'outage'
    const failing = (await (await api('/api/admin/ecoflow/poll', { method: 'POST' })).json()) as {
      state: string
      lastError: string
    }
    assert.equal(failing.state, 'failing')
    assert.match(failing.lastError, /^http_503/)
    const before = f.state.requests
    await sut.app.ecoflow.poll()
    assert.equal(f.state.requests, before, 'no request while backing off')
    f.state.mode = 'normal'
    const ok = (await (await api('/api/admin/ecoflow/poll', { method: 'POST' })).json()) as {
      state: string
    }
    assert.equal(ok.state, 'ok')
    assert.equal((await db.query('SELECT 1 FROM ecoflow_measurements')).rowCount, 2)
  })

  it('polls the other devices when one fails (a serial number EcoFlow does not know, listed first)', async (t) => {
    const { f, db, api } = await setup(t, { devices: ['NOSUCHDEVICE123', 'DCABZ8ZE1234567'] })
    await eventually(
      async () =>
        (await db.query(`SELECT 1 FROM ecoflow_measurements WHERE device_sn = 'DCABZ8ZE1234567'`))
          .rowCount === 1,
      { what: 'the known device polled' },
    )
    assert.ok(
      f.state.rejections.includes('1006'),
      'positive control: the unknown device was asked for and refused',
    )
    const list = (await (await api('/api/admin/ecoflow/devices')).json()) as {
      devices: Array<{ sn: string; lastError: string | null; lastPollAt: string | null }>
    }
    const bySn = new Map(list.devices.map((d) => [d.sn, d]))
    assert.match(String(bySn.get('NOSUCHDEVICE123')?.lastError), /^1006: device not found/)
    assert.equal(bySn.get('DCABZ8ZE1234567')?.lastError, null)
    const poll = (await (await api('/api/admin/ecoflow/poll', { method: 'POST' })).json()) as {
      state: string
    }
    assert.equal(poll.state, 'ok', 'one device failing is not a failed poll')
    assert.equal(
      (await db.query(`SELECT 1 FROM ecoflow_measurements WHERE device_sn = 'DCABZ8ZE1234567'`))
        .rowCount,
      2,
    )
  })

  it('stores an unknown model with its raw quota and NULL columns instead of failing', async (t) => {
    const { db } = await setup(t, {}, [
      { sn: 'BX11ZGLACIER001', productName: 'Glacier', fixture: 'glacier-quota.json' },
    ])
    await eventually(
      async () => (await db.query('SELECT 1 FROM ecoflow_measurements')).rowCount === 1,
      { what: 'one row' },
    )
    const [row] = (
      await db.query(
        `SELECT model, soc_percent, watts_in_sum, raw->>'pd.tmpL' AS freezer FROM ecoflow_measurements`,
      )
    ).rows
    assert.deepEqual(row, {
      model: 'unknown',
      soc_percent: null,
      watts_in_sum: null,
      freezer: '-12',
    })
  })

  it('is off and silent without keys', async (t) => {
    const f = await fake(t)
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        http: { adminApiKey: 'ecoflow-admin-key-0123456789abcdef' },
        ecoflow: { apiUrl: f.url },
      }),
    )
    const health = (await (await fetch(`${sut.httpUrl}/health`)).json()) as { ecoflow: unknown }
    assert.deepEqual(health.ecoflow, { enabled: false, state: 'off', devices: 0, lastError: null })
    const poll = await fetch(`${sut.httpUrl}/api/admin/ecoflow/poll`, {
      method: 'POST',
      headers: { 'x-api-key': 'ecoflow-admin-key-0123456789abcdef' },
    })
    assert.equal(poll.status, 409)
    assert.equal(f.state.requests, 0)
  })
})

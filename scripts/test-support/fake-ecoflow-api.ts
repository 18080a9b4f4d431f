/**
 * A fake EcoFlow IoT Open API for tests, served over real HTTP on port 0. It checks what the real
 * service checks: known access key (8513), signature over the flattened, sorted parameters plus
 * accessKey/nonce/timestamp (8521), a fresh timestamp and nonce; and answers with the real envelope.
 */
import type { AddressInfo } from 'node:net'
import { readFileSync } from 'node:fs'
import { serve, type ServerType } from '@hono/node-server'
import { Hono } from 'hono'
import { sign, signingString, type SigningForm } from '../../src/ecoflow/sign.js'

export type FakeDevice = {
  sn: string
  productName: string
  fixture?: string
  online?: number
  blocked?: boolean
}

export type FakeOptions = {
  accessKey: string
  secretKey: string
  devices: FakeDevice[]
  /** Which signature forms this account accepts (a real account answers the documented one). */
  accepts?: SigningForm[]
}

const WINDOW_MS = 5 * 60_000

export async function startFakeOpenApi(opts: FakeOptions) {
  const accepts = opts.accepts ?? ['documented']
  const seenNonces = new Set<string>()
  const state = {
    requests: 0,
    commands: [] as Array<Record<string, unknown>>,
    /** 'outage': HTTP 503 with an HTML body; 'badJson': 200 with a broken body. */
    mode: 'normal' as 'normal' | 'outage' | 'badJson',
    delayMs: 0,
    rejections: [] as string[],
  }
  const fixture = (name: string) =>
    JSON.parse(
      readFileSync(new URL(`../../src/ecoflow/fixtures/${name}`, import.meta.url), 'utf8'),
    ) as unknown
  const ok = (data: unknown) => ({
    code: '0',
    message: 'Success',
    data,
    eagleEyeTraceId: 'fake',
    tid: 'fake',
  })
  const fail = (code: string, message: string) => {
    state.rejections.push(code)
    return { code, message, eagleEyeTraceId: 'fake', tid: 'fake' }
  }

  const app = new Hono()
  app.use('*', async (c, next) => {
    state.requests++
    if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs))
    if (state.mode === 'outage') return c.html('<html><body>502 Bad Gateway</body></html>', 503)
    if (state.mode === 'badJson') return c.text('{"code":"0","data":{', 200)
    await next()
  })

  /** The real service's checks, in its order; returns an error envelope or undefined. */
  const authenticate = (headers: Record<string, string | undefined>, params: unknown) => {
    const { accesskey: accessKey, nonce, timestamp, sign: given } = headers
    if (!accessKey || !nonce || !timestamp || !given)
      return fail('8521', 'signature is wrong (missing accessKey, nonce, timestamp or sign header)')
    if (accessKey !== opts.accessKey) return fail('8513', 'accessKey is invalid')
    if (!/^\d{13}$/.test(timestamp) || Math.abs(Date.now() - Number(timestamp)) > WINDOW_MS)
      return fail('8521', 'signature is wrong (timestamp outside the window)')
    const valid = accepts.some(
      (form) =>
        sign(signingString({ params, accessKey, nonce, timestamp, form }), opts.secretKey) ===
        given,
    )
    if (!valid) return fail('8521', 'signature is wrong')
    if (seenNonces.has(`${nonce}:${timestamp}`))
      return fail('8521', 'signature is wrong (nonce reused)')
    seenNonces.add(`${nonce}:${timestamp}`)
    return undefined
  }
  const headersOf = (c: { req: { header: (n: string) => string | undefined } }) => ({
    accesskey: c.req.header('accessKey'),
    nonce: c.req.header('nonce'),
    timestamp: c.req.header('timestamp'),
    sign: c.req.header('sign'),
  })

  app.get('/iot-open/sign/device/list', (c) => {
    const err = authenticate(headersOf(c), {})
    if (err) return c.json(err)
    return c.json(
      ok(
        opts.devices.map((d) => ({
          sn: d.sn,
          productName: d.productName,
          deviceName: `${d.productName} ${d.sn.slice(-4)}`,
          online: d.online ?? 1,
        })),
      ),
    )
  })
  app.get('/iot-open/sign/device/quota/all', (c) => {
    const query = c.req.query()
    const err = authenticate(headersOf(c), query)
    if (err) return c.json(err)
    if (Object.keys(query).join() !== 'sn')
      return c.json(fail('8520', 'param error: expected exactly sn'))
    const d = opts.devices.find((x) => x.sn === query.sn)
    if (!d) return c.json(fail('1006', 'device not found'))
    if (d.blocked) return c.json(fail('1', 'current device is not allowed to get device info'))
    return c.json(ok(fixture(d.fixture ?? 'delta-pro-quota.json')))
  })
  app.put('/iot-open/sign/device/quota', async (c) => {
    if (!c.req.header('content-type')?.startsWith('application/json'))
      return c.json(fail('8520', 'content-type must be application/json'))
    const body = (await c.req.json()) as Record<string, unknown>
    const err = authenticate(headersOf(c), body)
    if (err) return c.json(err)
    state.commands.push(body)
    return c.json({ code: '0', message: 'Success', eagleEyeTraceId: 'fake', tid: 'fake' })
  })

  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s))
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    state,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

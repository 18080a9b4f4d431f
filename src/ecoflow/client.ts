import { signedHeaders, type SigningForm } from './sign.js'

/** Region shortcuts for the Open API host (docs/ecoflow.md, "Regions"); keys are region-bound (wrong host → 8513). */
export const REGION_HOSTS = {
  eu: 'https://api-e.ecoflow.com',
  us: 'https://api-a.ecoflow.com',
  global: 'https://api.ecoflow.com',
} as const

export function resolveApiUrl(apiUrl: string): string {
  return (REGION_HOSTS as Record<string, string>)[apiUrl] ?? apiUrl.replace(/\/+$/, '')
}

/** An answer from EcoFlow that is not `code "0"`, or a transport failure; `code` is EcoFlow's when it sent one. */
export class EcoflowError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
}

export type EcoflowDevice = {
  sn: string
  productName?: string
  deviceName?: string
  online?: number
}

export type ClientOptions = {
  apiUrl: string
  accessKey: string
  secretKey: string
  /** `auto`: the documented form, falling back to the legacy form by itself on 8521 (signature wrong). */
  signing: 'auto' | SigningForm
  timeoutMs: number
  onSigningFallback?: () => void
}

/** One call of the Open API: GET params go in the query string, PUT params are the JSON body. */
type ApiRequest = {
  method: 'GET' | 'PUT'
  path: string
  params?: Record<string, unknown>
  signal?: AbortSignal
}

/** The signed EcoFlow IoT Open API client: device list, quota/all, and the set (PUT quota) endpoint. */
export function createEcoflowClient(opts: ClientOptions) {
  const base = resolveApiUrl(opts.apiUrl)
  let form: SigningForm = opts.signing === 'legacy' ? 'legacy' : 'documented'

  async function once(req: ApiRequest): Promise<unknown> {
    const { method, path, params, signal } = req
    const headers: Record<string, string> = signedHeaders({
      params,
      accessKey: opts.accessKey,
      secretKey: opts.secretKey,
      form,
    })
    let url = `${base}${path}`
    let body: string | undefined
    if (method === 'GET') {
      if (params && Object.keys(params).length > 0)
        url += `?${new URLSearchParams(params as Record<string, string>).toString()}`
    } else {
      headers['content-type'] = 'application/json;charset=UTF-8'
      body = JSON.stringify(params ?? {})
    }
    const timeout = AbortSignal.timeout(opts.timeoutMs)
    let res: Response
    try {
      res = await fetch(url, {
        method,
        headers,
        body,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      })
    } catch (err) {
      const e = err as Error
      if (timeout.aborted)
        throw new EcoflowError('timeout', `EcoFlow did not answer within ${opts.timeoutMs} ms`, {
          cause: err,
        })
      throw new EcoflowError('network', `EcoFlow unreachable: ${e.message}`, { cause: err })
    }
    const text = await res.text()
    let json: { code?: unknown; message?: unknown; data?: unknown }
    try {
      json = JSON.parse(text) as typeof json
    } catch {
      throw new EcoflowError(
        `http_${res.status}`,
        `EcoFlow answered HTTP ${res.status} with a body that is not JSON`,
      )
    }
    const code = String(json.code ?? `http_${res.status}`)
    if (code !== '0') throw new EcoflowError(code, String(json.message ?? `HTTP ${res.status}`))
    return json.data
  }

  async function call(req: ApiRequest): Promise<unknown> {
    try {
      return await once(req)
    } catch (err) {
      // The old collector's form worked against real accounts for months; keep it as the fallback.
      if (
        opts.signing === 'auto' &&
        form === 'documented' &&
        err instanceof EcoflowError &&
        err.code === '8521'
      ) {
        form = 'legacy'
        opts.onSigningFallback?.()
        return once(req)
      }
      throw err
    }
  }

  return {
    get signingForm(): SigningForm {
      return form
    },
    async deviceList(signal?: AbortSignal): Promise<EcoflowDevice[]> {
      const data = await call({ method: 'GET', path: '/iot-open/sign/device/list', signal })
      if (!Array.isArray(data))
        throw new EcoflowError('bad_response', 'device/list did not return a list')
      return data.filter(
        (d): d is EcoflowDevice =>
          typeof d === 'object' && d !== null && typeof (d as EcoflowDevice).sn === 'string',
      )
    },
    async quotaAll(sn: string, signal?: AbortSignal): Promise<Record<string, unknown>> {
      const data = await call({
        method: 'GET',
        path: '/iot-open/sign/device/quota/all',
        params: { sn },
        signal,
      })
      if (typeof data !== 'object' || data === null || Array.isArray(data))
        throw new EcoflowError('bad_response', `quota/all for ${sn} returned no data`)
      return data as Record<string, unknown>
    },
    async setQuota(body: Record<string, unknown>, signal?: AbortSignal): Promise<unknown> {
      return call({ method: 'PUT', path: '/iot-open/sign/device/quota', params: body, signal })
    },
  }
}

export type EcoflowClient = ReturnType<typeof createEcoflowClient>

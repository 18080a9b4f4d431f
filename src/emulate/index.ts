import mqtt, { type MqttClient } from 'mqtt'
import { createHeaterEmulator } from './heater.js'
import { createRuuviEmulator } from './ruuvi.js'

export { createHeaterEmulator, HEATER_STATES } from './heater.js'
export { createRuuviEmulator } from './ruuvi.js'

export type Emulator = {
  tick(now?: Date): Array<[string, string]>
  attach?(client: MqttClient, onLog: (line: string) => void): Promise<void>
}

export type EmulateOptions = {
  kind: 'ruuvi' | 'heater'
  url: string
  username?: string | undefined
  password?: string | undefined
  site: string
  /** Heater id, or comma-separated Ruuvi locations. */
  devices: string[]
  legacy: boolean
  intervalMs: number
  /** Rounds to publish; 0 = until the signal aborts. */
  count: number
  signal: AbortSignal
  log: (line: string) => void
}

export function createEmulator(
  opts: Pick<EmulateOptions, 'kind' | 'site' | 'devices' | 'legacy'>,
): Emulator {
  return opts.kind === 'heater'
    ? createHeaterEmulator({ site: opts.site, deviceId: opts.devices[0] ?? 'emu01' })
    : createRuuviEmulator({ site: opts.site, locations: opts.devices, legacy: opts.legacy })
}

const PROTOCOLS = ['mqtt', 'mqtts', 'tcp', 'ssl', 'ws', 'wss'] as const
type BrokerOptions = {
  protocol: (typeof PROTOCOLS)[number]
  host: string
  port?: number
  path?: string
  username?: string
  password?: string
}

/**
 * The broker URL as mqtt.js connection options, parsed here with WHATWG URL: given the string, mqtt.js
 * parses it with the legacy url.parse(), which Node 24 (the executable's runtime) warns about on stderr
 * at every run (DEP0169).
 */
export function brokerOptions(raw: string): BrokerOptions {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new Error(
      `--url ${JSON.stringify(raw.slice(0, 200))} is not a URL (example: mqtt://127.0.0.1:1883)`,
    )
  }
  const protocol = url.protocol.replace(/:$/, '') as BrokerOptions['protocol']
  if (!PROTOCOLS.includes(protocol))
    throw new Error(
      `--url must start with ${PROTOCOLS.map((p) => `${p}://`).join(', ')}, not ${url.protocol}//`,
    )
  // IPv6 literals come bracketed ([::1]); the socket wants the bare address.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  if (host === '') throw new Error(`--url ${JSON.stringify(raw.slice(0, 200))} names no host`)
  const opts: BrokerOptions = { protocol, host }
  if (url.port !== '') opts.port = Number(url.port)
  // Over WebSocket the path selects the endpoint (paku's is ws.path, /mqtt by default).
  if (protocol === 'ws' || protocol === 'wss') opts.path = url.pathname + url.search
  try {
    if (url.username !== '') opts.username = decodeURIComponent(url.username)
    if (url.password !== '') opts.password = decodeURIComponent(url.password)
  } catch {
    throw new Error('--url has a user name or password that is not valid percent-encoding')
  }
  return opts
}

/** Connects to a broker and publishes the emulator's rounds (QoS 0, not retained, like the devices). */
export async function runEmulator(opts: EmulateOptions): Promise<number> {
  const emulator = createEmulator(opts)
  const client = await mqtt.connectAsync({
    ...brokerOptions(opts.url),
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    clientId: `paku-emulate-${opts.kind}-${process.pid}`,
    reconnectPeriod: 2000,
    connectTimeout: 10_000,
  })
  opts.log(`connected to ${opts.url}; publishing every ${opts.intervalMs} ms (Ctrl-C to stop)`)
  await emulator.attach?.(client, opts.log)
  let rounds = 0
  let messages = 0
  try {
    while (!opts.signal.aborted && (opts.count === 0 || rounds < opts.count)) {
      for (const [topic, payload] of emulator.tick(new Date())) {
        await client.publishAsync(topic, payload, { qos: 0 })
        messages++
      }
      rounds++
      if (opts.count !== 0 && rounds >= opts.count) break
      await sleep(opts.intervalMs, opts.signal)
    }
  } finally {
    await client.endAsync()
  }
  opts.log(`published ${messages} messages in ${rounds} rounds`)
  return messages
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

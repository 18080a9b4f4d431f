/**
 * ESP device simulators for the OTA tests: real MQTT and real HTTP clients that behave like the
 * devices do (paku-core's cmd/ota handling, docs/compatibility.md, "The OTA command push"; Arduino
 * HTTPUpdate's request, docs/ota.md, "Device protocols").
 */
import { createHash } from 'node:crypto'
import { connect as tcpConnect } from 'node:net'
import mqtt, { type MqttClient } from 'mqtt'

export type PushDeviceOptions = {
  mqttUrl: string
  id: string
  model: string
  version: string
  /** Report this result code instead of installing (e.g. 4 Installation failed). */
  failWith?: { code: number; message: string }
  /** Install but boot the old image again (an app that never marks itself valid). */
  rollBack?: boolean
  /** Acts on a command only once this settles (a device busy elsewhere; lets a test look first). */
  actAfter?: Promise<void>
}

/** paku-core over MQTT: clean session, QoS 0 subscription to cmd/ota, acks, downloads, reports, reboots. */
export class PushDevice {
  readonly commands: Array<{ url: string; version: string; checksum: string }> = []
  readonly downloads: Array<{ status: number; bytes: number; sha256: string }> = []
  version: string
  private client: MqttClient | undefined
  private uptime = 0
  private busy: Promise<void> = Promise.resolve()
  private readonly o: PushDeviceOptions

  constructor(o: PushDeviceOptions) {
    this.o = o
    this.version = o.version
  }

  get id(): string {
    return this.o.id
  }

  async connect(): Promise<void> {
    const c = await mqtt.connectAsync(this.o.mqttUrl, {
      clientId: this.o.id,
      clean: true,
      reconnectPeriod: 0,
      will: {
        topic: `paku/edge/${this.o.id}/status`,
        payload: Buffer.from('{"online":false}'),
        qos: 1,
        retain: true,
      },
    })
    this.client = c
    c.on('message', (topic, payload) => {
      if (topic !== `paku/edge/${this.o.id}/cmd/ota`) return
      this.busy = this.busy.then(() => this.onCommand(payload)).catch(() => undefined)
    })
    await c.subscribeAsync(`paku/edge/${this.o.id}/cmd/ota`, { qos: 0 })
    await this.publishStatus()
  }

  async publishStatus(): Promise<void> {
    this.uptime += 7
    await this.pub(
      'status',
      {
        online: true,
        device_id: this.o.id,
        firmware_version: this.version,
        device_model: this.o.model,
        uptime_seconds: this.uptime,
        signal_strength_dbm: -60,
      },
      true,
    )
  }

  async disconnect(): Promise<void> {
    await this.busy
    await this.client?.endAsync()
    this.client = undefined
  }

  /** Waits for the work a command started (download, report, reboot). */
  idle(): Promise<void> {
    return this.busy
  }

  private async pub(sub: string, body: unknown, retain = false): Promise<void> {
    await this.client?.publishAsync(`paku/edge/${this.o.id}/${sub}`, JSON.stringify(body), {
      qos: 0,
      retain,
    })
  }

  private async onCommand(payload: Buffer): Promise<void> {
    let cmd: { url?: string; version?: string; checksum?: string }
    try {
      cmd = JSON.parse(payload.toString()) as typeof cmd
    } catch {
      return // the firmware ignores invalid JSON silently
    }
    if (!cmd.url) return
    const target = cmd.version ?? 'unknown'
    this.commands.push({ url: cmd.url, version: target, checksum: cmd.checksum ?? '' })
    await this.o.actAfter
    const ts = ''
    await this.pub('ota/status', {
      timestamp: ts,
      status: 'accepted',
      current_version: this.version,
      target_version: target,
    })
    await this.pub('ota/progress', {
      timestamp: ts,
      state: 'Checking',
      percent: 0,
      downloaded: 0,
      total: 0,
      elapsed_ms: 0,
    })
    const res = await fetch(cmd.url)
    const body = Buffer.from(await res.arrayBuffer())
    const sha256 = createHash('sha256').update(body).digest('hex')
    this.downloads.push({ status: res.status, bytes: body.length, sha256 })
    const result = (success: boolean, code: number, message: string) =>
      this.pub('ota/result', {
        timestamp: ts,
        current_version: this.version,
        target_version: target,
        success,
        result_code: code,
        message,
      })
    if (
      res.status !== 200 ||
      Number(res.headers.get('content-length')) !== body.length ||
      body.length === 0
    )
      return result(false, 2, 'Download failed')
    await this.pub('ota/progress', {
      timestamp: ts,
      state: 'Downloading',
      percent: 50,
      downloaded: body.length / 2,
      total: body.length,
      elapsed_ms: 100,
    })
    await this.pub('ota/progress', {
      timestamp: ts,
      state: 'Verifying',
      percent: 100,
      downloaded: body.length,
      total: body.length,
      elapsed_ms: 200,
    })
    if (cmd.checksum && cmd.checksum.toLowerCase() !== sha256)
      return result(false, 3, 'Verification failed')
    if (this.o.failWith) {
      await this.pub('ota/progress', {
        timestamp: ts,
        state: 'Failed',
        percent: 100,
        downloaded: body.length,
        total: body.length,
        elapsed_ms: 300,
      })
      return result(false, this.o.failWith.code, this.o.failWith.message)
    }
    await this.pub('ota/progress', {
      timestamp: ts,
      state: 'Installing',
      percent: 100,
      downloaded: body.length,
      total: body.length,
      elapsed_ms: 300,
    })
    await this.pub('ota/progress', {
      timestamp: ts,
      state: 'Complete',
      percent: 100,
      downloaded: body.length,
      total: body.length,
      elapsed_ms: 400,
    })
    await result(true, 0, 'Success')
    // Reboot: drop the connection, come back on the new image (or the old one after a rollback).
    await this.client?.endAsync()
    if (!this.o.rollBack) this.version = target
    await this.connect()
  }
}

export type HttpUpdateResponse = { status: number; headers: Record<string, string>; body: Buffer }

/**
 * One Arduino-ESP32 HTTPUpdate request, byte for byte what the library sends: HTTP/1.0 (no chunked
 * encoding possible), its User-Agent and x-ESP32-* headers, over a raw socket.
 */
export function httpUpdateRequest(
  httpUrl: string,
  path: string,
  device: { mac: string; image: Buffer | undefined; version?: string; freeSpace?: number },
): Promise<HttpUpdateResponse> {
  const u = new URL(httpUrl)
  const md5 = device.image ? createHash('md5').update(device.image).digest('hex') : undefined
  const sha = device.image
    ? createHash('sha256').update(device.image).digest('hex').toUpperCase()
    : undefined
  const lines = [
    `GET ${path} HTTP/1.0`,
    `Host: ${u.host}`,
    'User-Agent: ESP32-http-Update',
    'Connection: close',
    'Cache-Control: no-cache',
    `x-ESP32-STA-MAC: ${device.mac}`,
    'x-ESP32-AP-MAC: 24:A1:60:00:00:01',
    `x-ESP32-free-space: ${device.freeSpace ?? 1966080}`,
    `x-ESP32-sketch-size: ${device.image?.length ?? 0}`,
    ...(md5 ? [`x-ESP32-sketch-md5: ${md5}`] : []),
    ...(sha ? [`x-ESP32-sketch-sha256: ${sha}`] : []),
    'x-ESP32-chip-size: 4194304',
    'x-ESP32-sdk-version: v4.4.7',
    'x-ESP32-mode: sketch',
    ...(device.version ? [`x-ESP32-version: ${device.version}`] : []),
  ]
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(Number(u.port), u.hostname, () =>
      socket.write(`${lines.join('\r\n')}\r\n\r\n`),
    )
    const chunks: Buffer[] = []
    socket.on('data', (d) => chunks.push(d))
    socket.on('error', reject)
    socket.on('end', () => {
      const all = Buffer.concat(chunks)
      const split = all.indexOf('\r\n\r\n')
      const head = all.subarray(0, split).toString('latin1').split('\r\n')
      const status = Number(head[0]?.split(' ')[1])
      const headers: Record<string, string> = {}
      for (const l of head.slice(1)) {
        const i = l.indexOf(':')
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
      }
      resolve({ status, headers, body: all.subarray(split + 4) })
    })
  })
}

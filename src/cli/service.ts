import { execFileSync } from 'node:child_process'
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  realpathSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { isSingleExecutable, serviceUnit } from '../assets.js'
import type { Config } from '../config/index.js'

/** The production config install-service writes when there is none: closed by default (no anonymous MQTT). */
export const PRODUCTION_CONFIG = {
  dataDir: '/var/lib/paku',
  log: { level: 'info', format: 'json' },
  mqtt: {
    host: '0.0.0.0',
    port: 1883,
    allowAnonymous: false,
    ws: { enabled: true, host: '0.0.0.0', port: 8083 },
  },
  http: { host: '0.0.0.0', port: 8080 },
}

const ENV_TEMPLATE = `# paku's secrets (systemd EnvironmentFile, mode 0600). Every variable: docs/configuration.md.
# PostgreSQL (empty = an embedded cluster under /var/lib/paku, from the distribution's postgresql binaries)
PAKU_DATABASE_URL=postgres://paku:CHANGE-ME@127.0.0.1:5432/paku
# Admin API key, at least 32 characters: openssl rand -hex 32 (or named keys: paku key create NAME --scopes …)
# PAKU_ADMIN_API_KEY=
# Base URL devices download firmware from
# PAKU_PUBLIC_URL=https://iot.example.com/ota
# The old shared MQTT credential compiled into the devices. Role full lets anyone holding it do anything;
# once the HA bridge and CI have their own (paku device add ha-bridge --role bridge), set device.
# PAKU_MQTT_USERNAME=
# PAKU_MQTT_PASSWORD=
# PAKU_MQTT_SHARED_ROLE=full
# TLS for MQTT (port 8883)
# PAKU_MQTT_TLS_ENABLED=true
# PAKU_MQTT_TLS_CERT_FILE=/etc/paku/tls/server.crt
# PAKU_MQTT_TLS_KEY_FILE=/etc/paku/tls/server.key
# EcoFlow
# PAKU_ECOFLOW_ACCESS_KEY=
# PAKU_ECOFLOW_SECRET_KEY=
`

export type InstallOptions = {
  root: string
  bin: string
  user: string
  execPath: string
  dryRun: boolean
  run: (cmd: string, args: string[]) => void
}

/**
 * Installs paku as a service: the executable, a system user, the unit, a closed-by-default config
 * and a secrets file (neither overwritten when present). Returns what it did, one line each.
 */
export function installService(o: InstallOptions): string[] {
  const did: string[] = []
  const at = (p: string) => join(o.root, p)
  /** Writes a file with `mode`; `keep`: one that exists already stays as it is. */
  const write = (p: string, text: string, { mode, keep }: { mode: number; keep: boolean }) => {
    if (keep && existsSync(at(p))) {
      did.push(`kept ${p} (exists)`)
      return
    }
    if (!o.dryRun) {
      mkdirSync(dirname(at(p)), { recursive: true })
      writeFileSync(at(p), text, { mode })
      chmodSync(at(p), mode)
    }
    did.push(`wrote ${p} (mode ${mode.toString(8)})`)
  }
  if (isSingleExecutable()) {
    const target = at(o.bin)
    const same = existsSync(target) && realpathSync(target) === realpathSync(o.execPath)
    if (!same) {
      if (!o.dryRun) {
        mkdirSync(dirname(target), { recursive: true })
        copyFileSync(o.execPath, target)
        chmodSync(target, 0o755)
      }
      did.push(`installed ${o.execPath} as ${o.bin}`)
    } else did.push(`${o.bin} is this executable`)
  } else
    did.push(
      `not copying the executable: this is paku from source (build dist/paku with npm run build and run its install-service)`,
    )
  const template = serviceUnit()
  const unit =
    o.bin === '/usr/local/bin/paku' ? template : template.replaceAll('/usr/local/bin/paku', o.bin)
  write(
    '/etc/systemd/system/paku.service',
    o.user === 'paku'
      ? unit
      : unit.replace(/^User=paku$/m, `User=${o.user}`).replace(/^Group=paku$/m, `Group=${o.user}`),
    { mode: 0o644, keep: false },
  )
  write('/etc/paku/paku.config.json', `${JSON.stringify(PRODUCTION_CONFIG, null, 2)}\n`, {
    mode: 0o644,
    keep: true,
  })
  write('/etc/paku/paku.env', ENV_TEMPLATE, { mode: 0o600, keep: true })
  if (o.root === '/' && !o.dryRun) {
    try {
      o.run('id', ['-u', o.user])
      did.push(`user ${o.user} exists`)
    } catch {
      o.run('useradd', [
        '--system',
        '--user-group',
        '--home-dir',
        '/var/lib/paku',
        '--no-create-home',
        '--shell',
        '/usr/sbin/nologin',
        o.user,
      ])
      did.push(`created system user ${o.user}`)
    }
    o.run('systemctl', ['daemon-reload'])
    did.push('ran systemctl daemon-reload')
  }
  return did
}

export function runCommand(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

/** The /health URL wait-ready polls: the configured HTTP port on loopback when paku listens on all addresses. */
export function healthUrl(config: Config): string {
  const host = ['0.0.0.0', '::', ''].includes(config.http.host) ? '127.0.0.1' : config.http.host
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.http.port}/health`
}

/** Polls /health until paku answers ok or degraded (migrated, broker and HTTP listening). */
export async function waitReady(
  url: string,
  timeoutMs: number,
): Promise<{ ok: true; ms: number; status: string } | { ok: false; error: string }> {
  const t0 = Date.now()
  let last = 'no answer'
  while (Date.now() - t0 < timeoutMs) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
      const body = (await res.json().catch(() => ({}))) as { status?: string }
      if (res.status === 200 && (body.status === 'ok' || body.status === 'degraded'))
        return { ok: true, ms: Date.now() - t0, status: body.status }
      last = `HTTP ${res.status} ${body.status ?? ''}`.trim()
    } catch (err) {
      last = (err as Error).message
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    ok: false,
    error: `paku not ready after ${Math.round(timeoutMs / 1000)} s at ${url} (${last})`,
  }
}

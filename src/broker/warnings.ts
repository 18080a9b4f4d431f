import type { Config } from '../config/index.js'

/** Whether a listen address is reachable from this host only. */
export const loopback = (host: string): boolean =>
  host === 'localhost' || host === '::1' || host.startsWith('127.')

/**
 * Start-up warnings for settings that leave the broker open wider than a production fleet needs: the
 * shared credential with full rights, and anonymous access on a listener other hosts can reach.
 */
export function openSettings(
  config: Config['mqtt'],
): Array<{ msg: string; fields: Record<string, unknown> }> {
  const out: Array<{ msg: string; fields: Record<string, unknown> }> = []
  const sc = config.sharedCredential
  if (sc.username && sc.password && sc.role === 'full') {
    out.push({
      msg: 'the shared MQTT credential has full rights: anyone who reads it out of a firmware image may publish and subscribe anything; give the bridge and CI their own credentials, then set PAKU_MQTT_SHARED_ROLE=device',
      fields: { username: sc.username },
    })
  }
  // Each listener with its own anonymous policy (the WebSocket and TLS ones follow mqtt.allowAnonymous unless set).
  const listeners: Array<[string, boolean]> = [
    [config.host, config.allowAnonymous],
    ...(config.ws.enabled
      ? ([[config.ws.host, config.ws.allowAnonymous ?? config.allowAnonymous]] as Array<
          [string, boolean]
        >)
      : []),
    ...(config.tls.enabled
      ? ([[config.tls.host, config.tls.allowAnonymous ?? config.allowAnonymous]] as Array<
          [string, boolean]
        >)
      : []),
  ]
  const open = [
    ...new Set(listeners.filter(([h, anonymous]) => anonymous && !loopback(h)).map(([h]) => h)),
  ]
  if (open.length > 0) {
    out.push({
      msg: 'anonymous MQTT clients are allowed on a listener other hosts can reach',
      fields: { listeners: open, anonymousRole: config.anonymousRole },
    })
  }
  return out
}

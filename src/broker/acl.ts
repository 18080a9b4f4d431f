/**
 * Topic permissions (issue #8): a device may publish only its own topics and subscribe only to what is
 * sent to it; bridges and services (and anonymous clients, where allowed at all) may do anything.
 * `{id}` stands for the device id (its MQTT username), `+`/`#` are MQTT wildcards.
 */
export type Identity = { username: string | null; role: 'anonymous' | 'device' | 'bridge' | 'service' }

// What paku-core publishes (contract §1.2): its edge and heater topics, and sensor readings it relays
// for BLE tags and wired probes whose ids are not its own.
const DEVICE_PUBLISH = ['+/+/{id}/#', '+/sensors/+/data', '+/fridge/+/data', 'paku/devices/{id}/#', 'homeassistant/#']
// What is sent to a device: commands, config, control, the legacy broadcasts and EcoFlow summaries.
const DEVICE_SUBSCRIBE = [
  '+/edge/{id}/cmd/#',
  '+/edge/{id}/config/set',
  '+/edge/{id}/control',
  '+/heater/{id}/cmd',
  '+/control',
  '+/cmd/#',
  'paku/devices/{id}/cmd/#',
  '+/fridge/+/cmd',
  'paku/ecoflow/+/power',
]

/** Whether `topic` (which may hold wildcards, for SUBSCRIBE) lies within `pattern`. */
export function within(pattern: string, topic: string): boolean {
  const p = pattern.split('/')
  const t = topic.split('/')
  for (let i = 0; i < p.length; i++) {
    const seg = p[i]
    if (seg === '#') return true
    const tseg = t[i]
    if (tseg === undefined) return false
    // A filter wildcard is only within the pattern where the pattern has one too.
    if (seg === '+') {
      if (tseg === '#') return false
      continue
    }
    if (seg !== tseg) return false
  }
  return p.length === t.length
}

function allowed(patterns: readonly string[], id: string, topic: string): boolean {
  // An id with wildcard characters could widen its own rules; such a client matches nothing.
  if (/[+#/]/.test(id)) return false
  return patterns.some((p) => within(p.replaceAll('{id}', id), topic))
}

/**
 * Where paku instances exchange broker state through the cluster's Redis (docs/scaling.md). No client
 * may publish or subscribe there: it carries other clients' sessions and queued messages.
 */
export const CLUSTER_TOPIC_PREFIX = '$SYS/paku-cluster/'

/** Whether a subscription filter could receive the cluster's internal messages ($SYS/#, $SYS/+/…). */
function reachesCluster(filter: string): boolean {
  const [first, second] = filter.split('/')
  return first === '$SYS' && (second === undefined || second === '#' || second === '+' || second === 'paku-cluster')
}

export function canPublish(who: Identity, topic: string): boolean {
  // $SYS/… is the broker's own (aedes' default authorizePublish refuses it too; paku's replaces it).
  if (topic.startsWith('$SYS/')) return false
  if (who.role !== 'device') return true
  return allowed(DEVICE_PUBLISH, who.username ?? '', topic)
}

export function canSubscribe(who: Identity, topic: string): boolean {
  if (reachesCluster(topic)) return false
  if (who.role !== 'device') return true
  return allowed(DEVICE_SUBSCRIBE, who.username ?? '', topic)
}

/**
 * Topic permissions. A `device` may publish its own topics and the relayed sensors it owns, and
 * subscribe to what is sent to it plus the shared feeds paku-core's screen boards read; `readonly`
 * may subscribe but never publish; `full` (bridges, services) may do anything. `{id}` stands for the
 * device id, `+`/`#` are MQTT wildcards. What paku-core really sends and reads is listed in
 * docs/security.md ("What a device may do").
 */
export type Rights = { rights: 'full' | 'readonly' | 'device'; deviceId: string | null }

/** A relayed sensor's topic identity: `{site}/{system}/{sensor}/data`, system `sensors` or `fridge`. */
export type SensorKey = { site: string; system: string; sensor: string }

/** Allowed, refused, or allowed only where the device owns (subscribe) or may claim (publish) a relayed sensor. */
export type Verdict = boolean | { sensor: SensorKey }

// Sent to a device: its commands, config and control, the broadcasts, and (Waveshare screen boards)
// the shared feeds, which are read-only: publishing there needs the topic's own rights.
const DEVICE_COMMANDS = [
  '+/edge/{id}/cmd/#',
  '+/edge/{id}/config/set',
  '+/edge/{id}/control',
  '+/heater/{id}/cmd',
  'paku/devices/{id}/cmd/#',
]
const DEVICE_SUBSCRIBE = [
  ...DEVICE_COMMANDS,
  '+/control',
  '+/cmd/#',
  '+/sensors/+/data',
  '+/heater/+/data',
  '+/ecoflow/+/power',
]
// Its own topics: edge status, config, OTA reports, heater state and data, Wi-Fi and Ruuvi replies.
const DEVICE_PUBLISH = ['+/+/{id}/#', 'paku/devices/{id}/#']
/** Systems whose `{site}/{system}/{sensor}/data` a gateway publishes for sensors that are not itself. */
const RELAYED = new Set(['sensors', 'fridge'])
/** paku-core's device ids (ESP32-, ESP32-S3-, ESP8266- and 8 hex digits of the MAC). */
const EDGE_ID = /^(ESP32|ESP32-S3|ESP8266)-[0-9A-Fa-f]{8}$/

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

/** An id with wildcard characters or a separator could widen its own rules; such a device matches nothing. */
export function validDeviceId(id: string | null): id is string {
  return id !== null && id !== '' && !/[+#/]/.test(id)
}

function allowed(patterns: readonly string[], id: string, topic: string): boolean {
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
  return (
    first === '$SYS' &&
    (second === undefined || second === '#' || second === '+' || second === 'paku-cluster')
  )
}

/**
 * The device a relayed sensor id names by its prefix: paku-core calls its wired probes `{id}_wired`,
 * so `ESP32-AABBCCDD_wired` belongs to ESP32-AABBCCDD and to no one else.
 */
export function namedOwner(sensor: string): string | undefined {
  const prefix = sensor.split('_')[0] ?? ''
  return sensor.includes('_') && EDGE_ID.test(prefix) ? prefix : undefined
}

/** The relayed sensor a concrete topic `{site}/{system}/{sensor}/{leaf}` carries, if its system relays. */
function relayedSensor(topic: string, leaf: string): SensorKey | undefined {
  const [site, system, sensor, last, ...rest] = topic.split('/')
  if (rest.length > 0 || last !== leaf || !site || !system || !sensor || !RELAYED.has(system))
    return undefined
  if (/[+#]/.test(site + sensor)) return undefined
  return { site, system, sensor }
}

/**
 * Home Assistant discovery (`homeassistant/<component>/[<node_id>/]<object_id>/config`) for the device's
 * own entities only: the node id (or, without one, the object id) must be the device id or start or end
 * with it after an underscore (the heater add-on uses `autoterm_{id}`).
 */
function ownDiscoveryTopic(id: string, topic: string): boolean {
  const parts = topic.split('/')
  if (
    parts[0] !== 'homeassistant' ||
    parts.at(-1) !== 'config' ||
    (parts.length !== 4 && parts.length !== 5)
  )
    return false
  const node = parts[parts.length - 3] as string
  return node === id || node.endsWith(`_${id}`) || node.startsWith(`${id}_`)
}

export function canPublish(who: Rights, topic: string): Verdict {
  // $SYS/… is the broker's own (aedes' default authorizePublish refuses it too; paku's replaces it).
  if (topic.startsWith('$SYS/')) return false
  if (who.rights === 'full') return true
  if (who.rights === 'readonly' || !validDeviceId(who.deviceId)) return false
  const id = who.deviceId
  if (allowed(DEVICE_PUBLISH, id, topic) || ownDiscoveryTopic(id, topic)) return true
  const sensor = relayedSensor(topic, 'data')
  if (!sensor) return false
  const named = namedOwner(sensor.sensor)
  if (named !== undefined) return named === id
  return { sensor }
}

export function canSubscribe(who: Rights, filter: string): Verdict {
  if (reachesCluster(filter)) return false
  if (who.rights !== 'device') return true
  if (!validDeviceId(who.deviceId)) return false
  if (allowed(DEVICE_SUBSCRIBE, who.deviceId, filter)) return true
  // A fridge's commands go to the gateway that relays it (paku/fridge/{location}/cmd).
  const fridge = relayedSensor(filter, 'cmd')
  return fridge && fridge.system === 'fridge' ? { sensor: fridge } : false
}

/**
 * Whether a message on a concrete topic may be delivered to a client: checked again at delivery, so a
 * queued message, or a subscription stored under other rights, reaches only those allowed now.
 * `owns` answers from the claims known at that moment (delivery cannot wait).
 */
export function canReceive(
  who: Rights,
  topic: string,
  owns: (sensor: SensorKey) => boolean,
): boolean {
  const v = canSubscribe(who, topic)
  return v === true || (typeof v === 'object' && owns(v.sensor))
}

/**
 * The topic fields of a discovery config (`*_topic`, the abbreviated `*_t`, `topic` in availability
 * lists, with `~` expanded) must stay within the device's own topics: otherwise one device could make
 * Home Assistant read or command another's. Returns why a config is refused, or undefined. An empty
 * payload (removing the entity) is always fine.
 */
export function discoveryProblem(id: string, payload: Buffer): string | undefined {
  if (payload.length === 0) return undefined
  let doc: unknown
  try {
    doc = JSON.parse(payload.toString('utf8'))
  } catch {
    return 'a discovery config must be a JSON object'
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    return 'a discovery config must be a JSON object'
  const tilde = (doc as Record<string, unknown>)['~']
  const base = typeof tilde === 'string' ? tilde : undefined
  const expand = (t: string) =>
    base === undefined
      ? t
      : t.startsWith('~')
        ? base + t.slice(1)
        : t.endsWith('~')
          ? t.slice(0, -1) + base
          : t
  const own = (t: string) => allowed(DEVICE_PUBLISH, id, t) || allowed(DEVICE_COMMANDS, id, t)
  const stack: unknown[] = [doc]
  while (stack.length > 0) {
    const node = stack.pop()
    if (typeof node !== 'object' || node === null) continue
    for (const [key, value] of Object.entries(node)) {
      if (
        typeof value === 'string' &&
        (key === 'topic' || key.endsWith('_topic') || key.endsWith('_t'))
      ) {
        const t = expand(value)
        if (!own(t))
          return `discovery config points at ${JSON.stringify(t.slice(0, 200))}, which is not this device's`
      } else if (typeof value === 'object') stack.push(value)
    }
  }
  return undefined
}

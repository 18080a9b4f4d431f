/** What a topic means to ingest. Names follow the old `{site_id}/{system}/{device_id}/{topic_type}` scheme. */
export type Route =
  | { type: 'data'; siteId: string; system: string; deviceId: string }
  | {
      type: 'status' | 'config' | 'ota_status' | 'ota_progress' | 'ota_result'
      siteId: string
      deviceId: string
    }
  /** The legacy flat Ruuvi topic `paku/ruuvi/van_inside` (docs/compatibility.md, "Legacy flat Ruuvi payloads"). */
  | { type: 'legacy_ruuvi'; siteId: string; sensorId: string }

export type TopicType = Route['type']

export type TopicResult =
  | { kind: 'route'; route: Route }
  /** Not ours to store: commands, HA discovery, `$SYS/…`. The broker still delivers it. */
  | { kind: 'ignore' }
  /** Shaped like an ingest topic but malformed: recorded in ingest_rejects with this reason. */
  | { kind: 'reject'; reason: string }

/** Longest topic level we store as an identifier; the columns are TEXT, but ids this long are abuse. */
export const MAX_LEVEL_LENGTH = 128

const OTA_TYPES = { status: 'ota_status', progress: 'ota_progress', result: 'ota_result' } as const
// C0/C1 control characters (including U+0000, which PostgreSQL text cannot hold) are never part of an id.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/

/**
 * Maps a topic to an ingest route. The one place that knows the topic scheme (docs/compatibility.md,
 * "Topic catalogue"):
 * `{site}/{system}/{device}/data`, `{site}/edge/{device}/status|config`, `{site}/edge/{device}/config/report`,
 * `{site}/edge/{device}/ota/status|progress|result` and the legacy `{site}/ruuvi/{sensor}`.
 */
export function parseTopic(topic: string): TopicResult {
  if (topic.startsWith('$')) return { kind: 'ignore' }
  const levels = topic.split('/')
  const last = levels[levels.length - 1]
  const [site = '', system = '', device = ''] = levels

  if (last === 'data') {
    if (levels.length !== 4) {
      return reject(
        `data topic must be {site}/{system}/{device}/data (4 levels), got ${levels.length}`,
      )
    }
    return checked(levels, { type: 'data', siteId: site, system, deviceId: device })
  }

  if (system === 'edge' && levels.length >= 4) {
    const kind = levels.slice(3).join('/')
    if (kind === 'status' || kind === 'config' || kind === 'config/report') {
      const type = kind === 'status' ? 'status' : 'config'
      return checked(levels.slice(0, 3), { type, siteId: site, deviceId: device })
    }
    if (levels[3] === 'ota' && levels.length === 5) {
      const sub = levels[4] as string
      if (Object.hasOwn(OTA_TYPES, sub)) {
        return checked(levels.slice(0, 3), {
          type: OTA_TYPES[sub as keyof typeof OTA_TYPES],
          siteId: site,
          deviceId: device,
        })
      }
      return reject(`unknown OTA topic ota/${sub}: expected ota/status, ota/progress or ota/result`)
    }
    // cmd/ota, config/set, control, status/light/1 …: device-bound or HA-bound traffic.
    return { kind: 'ignore' }
  }

  if (levels.length === 3 && system === 'ruuvi') {
    return checked(levels, { type: 'legacy_ruuvi', siteId: site, sensorId: device })
  }
  return { kind: 'ignore' }
}

/**
 * parseTopic that remembers its answers for up to maxTopics topics (then starts over): a device
 * publishes to the same few topics all its life, and splitting and checking each message's topic
 * again was ~7 % of what paku allocated under load (docs/performance.md, "Allocations per message, and
 * the debug() shim"). The answers are frozen, since every message of a topic shares one.
 */
export function createTopicParser(maxTopics = 10_000): (topic: string) => TopicResult {
  const known = new Map<string, TopicResult>()
  return (topic) => {
    let result = known.get(topic)
    if (result === undefined) {
      result = parseTopic(topic)
      if (result.kind === 'route') Object.freeze(result.route)
      Object.freeze(result)
      // Longer topics are parsed each time: 10,000 topics of MQTT's 64 KiB would be 1.3 GB.
      if (topic.length <= MAX_CACHED_TOPIC_LENGTH) {
        if (known.size >= maxTopics) known.clear()
        known.set(topic, result)
      }
    }
    return result
  }
}

// Four levels of the longest id and then some: every topic paku stores is shorter.
const MAX_CACHED_TOPIC_LENGTH = 4 * MAX_LEVEL_LENGTH + 64

function checked(idLevels: readonly string[], route: Route): TopicResult {
  for (let i = 0; i < idLevels.length; i++) {
    const level = idLevels[i] as string
    if (level === '') return reject(`topic level ${i + 1} is empty`)
    if (level.length > MAX_LEVEL_LENGTH)
      return reject(`topic level ${i + 1} is longer than ${MAX_LEVEL_LENGTH} characters`)
    if (CONTROL.test(level)) return reject(`topic level ${i + 1} contains a control character`)
  }
  return { kind: 'route', route }
}

function reject(reason: string): TopicResult {
  return { kind: 'reject', reason }
}

/** The device a route belongs to, for rate-limited logging and the rejects table. */
export function routeDevice(route: Route): string {
  return route.type === 'legacy_ruuvi' ? route.sensorId : route.deviceId
}

import { counter, gauge, type Metric } from '../util/metric.js'
import { QUOTA_NAMES, type Ledger } from './ledger.js'

/** The broker's counters since start; the units of the broker each add to their own. */
export function createCounts() {
  return {
    connections: 0,
    messagesIn: 0,
    clientErrors: 0,
    authFailures: 0,
    denied: 0,
    refusedConnections: 0,
    refusedClientIds: 0,
    refusedOrigins: 0,
    expiredSessions: 0,
    commandsNotDelivered: 0,
  }
}

export type Counts = ReturnType<typeof createCounts>

/** Listening, clients, counters, and what the broker holds with the refusals per quota. */
export function brokerHealth(p: {
  listening: boolean
  clients: number
  counts: Counts
  pendingStateChanges: number
  ledger: Ledger
  totalBytes: number
}) {
  const l = p.ledger.stats()
  return {
    ok: p.listening,
    clients: p.clients,
    ...p.counts,
    pendingStateChanges: p.pendingStateChanges,
    // What the broker holds, and the refusals per quota since start.
    state: {
      sessions: l.sessions,
      persistentSessions: l.persistentSessions,
      retainedTopics: l.retainedTopics,
      retainedBytes: l.retainedBytes,
      queuedBytes: l.queuedBytes,
      totalBytes: p.totalBytes,
    },
    quotaRefusals: l.refused,
  }
}

export type BrokerHealth = ReturnType<typeof brokerHealth>

/** The broker's counters and state as Prometheus metrics. */
export function brokerMetrics(h: BrokerHealth): Metric[] {
  return [
    gauge('paku_mqtt_clients', 'Connected MQTT clients.', h.clients),
    counter('paku_mqtt_connections_total', 'MQTT connections accepted.', h.connections),
    counter('paku_mqtt_messages_in_total', 'PUBLISH packets accepted from clients.', h.messagesIn),
    counter(
      'paku_mqtt_auth_failures_total',
      'Refused MQTT logins (bad credentials, anonymous, blocked after failures).',
      h.authFailures,
    ),
    counter(
      'paku_mqtt_denied_total',
      'PUBLISH and SUBSCRIBE refused by topic permissions.',
      h.denied,
    ),
    counter(
      'paku_mqtt_refused_client_ids_total',
      'CONNECTs refused for their client id (not the device’s own, or held by another login).',
      h.refusedClientIds,
    ),
    counter(
      'paku_mqtt_refused_origins_total',
      'WebSocket upgrades refused for their browser Origin.',
      h.refusedOrigins,
    ),
    counter(
      'paku_mqtt_refused_connections_total',
      'Connections refused over mqtt.maxConnectionsPerAddress.',
      h.refusedConnections,
    ),
    counter(
      'paku_mqtt_expired_sessions_total',
      'Persistent sessions deleted after mqtt.sessionExpiryHours.',
      h.expiredSessions,
    ),
    counter(
      'paku_mqtt_commands_not_delivered_total',
      'cmd/ota messages from clients acknowledged but not delivered (a duplicate for the device and version, or a device the rollout does not target).',
      h.commandsNotDelivered,
    ),
    {
      name: 'paku_mqtt_quota_refusals_total',
      help: 'Refusals per broker quota (retained topics and bytes, persistent sessions, subscriptions, queued messages, relayed sensors, total state).',
      type: 'counter',
      samples: QUOTA_NAMES.map((q) => ({ labels: { quota: q }, value: h.quotaRefusals[q] })),
    },
    gauge(
      'paku_mqtt_persistent_sessions',
      'Persistent MQTT sessions kept.',
      h.state.persistentSessions,
    ),
    gauge('paku_mqtt_retained_bytes', 'Bytes of retained messages held.', h.state.retainedBytes),
    gauge(
      'paku_mqtt_queued_bytes',
      'Bytes of QoS 1/2 messages queued for sessions.',
      h.state.queuedBytes,
    ),
  ]
}

import type { Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import type { Logger } from '../log/index.js'
import type { DedupKey, Reject, Row } from './records.js'
import { toRow } from './records.js'
import { ingestMetrics } from './metrics.js'
import { decodePayload, parseTimestamp } from './payloads.js'
import { createSpool } from './spool.js'
import { createRedeliveries, dedupKey } from './redelivery.js'
import { createStore, type DeviceReports } from './store.js'
import { createTopicParser, parseTopic, routeDevice } from './topic.js'
import { createWriter, type Writer, type WriterStats } from './writer.js'

export { parseTopic, type Route, type TopicResult } from './topic.js'
export { decodePayload, parseTimestamp } from './payloads.js'
export type { Row } from './records.js'

/** One message as the broker hands it over. */
export type IncomingMessage = {
  topic: string
  payload: Buffer
  clientId?: string | null
  /** QoS 1/2 messages are acknowledged only once durable: accept() then returns a promise. */
  qos?: 0 | 1 | 2
  messageId?: number | undefined
  /** MQTT DUP flag: a redelivery of a message whose acknowledgement the client did not see. */
  dup?: boolean
  retain?: boolean
  receivedAt?: Date
}

export type IngestStats = WriterStats & {
  received: number
  accepted: number
  rejected: number
  ignored: number
  duplicates: number
  /** Clients whose recent QoS 1/2 message ids are in memory (see Redeliveries.release). */
  rememberedClients: number
}

export type IngestOptions = {
  config: Config['ingest']
  db: () => Kysely<DB>
  log: Logger
  /** Directory of the on-disk spool used while PostgreSQL is unreachable. */
  spoolDir: string
  /** Injectable clock for the once-a-minute log limits. */
  now?: () => number
  /** Sees every accepted status and OTA row (app.ts hands them to OTA); must not throw or block. */
  observe?: (row: Row) => void
  /** Writes status and OTA rows into OTA's tables, inside the batch's transaction (OTA's functions). */
  deviceReports: DeviceReports
}

/** Raw bytes kept per reject: enough to see what was wrong without storing a flood. */
const REJECT_PAYLOAD_BYTES = 4096
const LOG_EVERY_MS = 60_000

/**
 * Turns broker messages into rows: topic → route, payload → validated row, into the batch writer.
 * accept() never throws and never writes per message; for QoS 1/2 it returns a promise
 * that the next batch (or the spool) resolves. Bad input becomes a reject row.
 */
export function createIngest(opts: IngestOptions) {
  const { log, config } = opts
  const now = opts.now ?? Date.now
  const counts = { received: 0, accepted: 0, rejected: 0, ignored: 0, duplicates: 0 }
  const rejectLog = createRejectLog(log, now)
  const retained = createRetainedStatuses()
  let summary: NodeJS.Timeout | undefined

  const spool = createSpool({ dir: opts.spoolDir, maxBytes: config.spoolMaxBytes, log })
  const parseTopic = createTopicParser()
  const redeliveries = createRedeliveries({
    db: opts.db,
    failing: () => writer.failing,
    degraded: () => writer.degraded,
  })
  const writer = createWriter({
    ...writerSettings(config),
    db: opts.db,
    store: createStore(opts.deviceReports),
    log,
    spool,
    toReject: refusedRow,
  })

  /** Queues the reject row of a message ingest refuses, and logs it (once per device per minute). */
  function reject(r: {
    msg: IncomingMessage
    deviceId: string | null
    reason: string
    receivedAt: Date
    dedup: DedupKey | undefined
  }): Promise<void> | undefined {
    const { msg, deviceId, reason, receivedAt, dedup } = r
    counts.rejected++
    const row: Row = toReject(msg, { deviceId, reason, receivedAt })
    if (dedup) row.dedup = dedup
    const done = push(row, msg)
    rejectLog({ deviceId, key: deviceId ?? msg.clientId ?? msg.topic, topic: msg.topic, reason })
    return done
  }

  const push = (row: Row, msg: IncomingMessage) => queueRow(writer, row, msg.qos)

  /** Stores one message; for a QoS 1/2 message, resolves once it is durable. Never throws. */
  function ingest(msg: IncomingMessage, dedup: DedupKey | undefined): Promise<void> | undefined {
    const done = route(msg, dedup)
    if (dedup) redeliveries.remember(dedup, done)
    return done
  }

  /** Topic → route → row, into the writer. */
  function route(msg: IncomingMessage, dedup: DedupKey | undefined): Promise<void> | undefined {
    const receivedAt = msg.receivedAt ?? new Date()
    const parsed = parseTopic(msg.topic)
    if (parsed.kind === 'ignore') {
      counts.ignored++
      return undefined
    }
    if (parsed.kind === 'reject')
      return reject({ msg, deviceId: null, reason: parsed.reason, receivedAt, dedup })
    const deviceId = routeDevice(parsed.route)
    if (msg.payload.length > config.maxPayloadBytes) {
      const reason = `payload is ${msg.payload.length} bytes, more than the limit of ${config.maxPayloadBytes}`
      return reject({ msg, deviceId, reason, receivedAt, dedup })
    }
    if (parsed.route.type === 'status' && msg.retain && retained.repeats(msg.topic, msg.payload)) {
      counts.duplicates++
      return undefined
    }
    let result: ReturnType<typeof toRow>
    try {
      result = toRow(parsed.route, msg.payload, receivedAt)
    } catch (err) {
      // toRow is pure and total; reaching this is our bug, and it must still not cost the message.
      result = { ok: false, reason: `internal error: ${(err as Error).message}` }
    }
    if (!result.ok) return reject({ msg, deviceId, reason: result.reason, receivedAt, dedup })
    counts.accepted++
    const row = result.row
    if (dedup) row.dedup = dedup
    const done = push(row, msg)
    if (opts.observe && (row.kind === 'status' || row.kind === 'ota'))
      notify(opts.observe, row, log)
    return done
  }

  const stats = (): IngestStats => ({
    ...counts,
    ...writer.stats(),
    rememberedClients: redeliveries.clients,
  })

  return {
    name: 'ingest',
    /**
     * Routes, validates and queues one message. Returns a promise for QoS 1/2 messages that resolves
     * once the row (or its reject) is committed or spooled: the broker acknowledges only then.
     * Never throws, never rejects.
     */
    accept(msg: IncomingMessage): Promise<void> | undefined {
      counts.received++
      const key = dedupKey(msg)
      if (!key) return ingest(msg, undefined)
      // Checked whether or not DUP is set: mqtt.js, for one, redelivers without it.
      const check = () => {
        const dup = redeliveries.duplicateOf(key)
        if (!dup) return ingest(msg, key)
        counts.duplicates++
        return dup.done
      }
      const load = redeliveries.load(key.clientId)
      return load ? load.then(check) : check()
    },
    /**
     * Stores a row produced inside paku (an EcoFlow poll) through the same batched, spooled path as
     * MQTT messages; resolves once it is durable.
     */
    record(row: Row): Promise<void> {
      const done = writer.push(row, true)
      return done || Promise.resolve()
    },
    async start(): Promise<void> {
      spool.open()
      writer.start()
      summary = logSummaries(log, stats)
    },
    async stop(): Promise<void> {
      clearInterval(summary)
      await writer.stop()
    },
    /**
     * With several instances: the client just connected here and may have published through another
     * instance since this one last looked its message ids up; its next QoS 1/2 message merges them in
     * from ingest_dedup again (what this instance remembers itself stays).
     */
    forget: (clientId: string): void => redeliveries.forget(clientId),
    /** The client disconnected: what paku remembers of its message ids may go (see Redeliveries.release). */
    release: (clientId: string): void => redeliveries.release(clientId),
    /** Writes what is pending now (tests and shutdown). */
    flush: () => writer.flush(),
    stats,
    /** Counters, gauges and batch-write durations for /metrics. */
    metrics: () => ingestMetrics(stats(), writer.flushDurations()),
    /**
     * What MQTT ingest would refuse in a data message on `topic` (the reason), or undefined: for HTTP
     * telemetry, which answers 400 with the same reasons before anything is queued.
     */
    /** What MQTT ingest would refuse in a data message on `topic` (see checkData below). */
    checkData: (topic: string, payload: Uint8Array): string | undefined =>
      checkData({ parseTopic, maxPayloadBytes: config.maxPayloadBytes }, topic, payload),
    health(): { ok: boolean; failing: boolean; degraded: boolean } {
      return { ok: !writer.degraded, failing: writer.failing, degraded: writer.degraded }
    },
    /** Rows are arriving faster than they are written (a burst): background work can wait for it to end. */
    busy: (): boolean => writer.busy,
  }
}

export type Ingest = ReturnType<typeof createIngest>

/**
 * Queues a row in the writer. For QoS 1/2 returns the promise of its durability; for QoS 0 the
 * writer's room(): no acknowledgement is needed, but while the database lags, the broker waits on it
 * before reading more from the connection (TCP backpressure instead of an unbounded queue).
 */
function queueRow(writer: Writer, row: Row, qos: 0 | 1 | 2 = 0): Promise<void> | undefined {
  const durable = qos > 0
  const done = writer.push(row, durable)
  if (durable) return done || undefined
  return writer.room()
}

/** Hands a status or OTA row to the observer, which must not throw; if it does, that is logged. */
function notify(observe: (row: Row) => void, row: Row, log: Logger): void {
  try {
    observe(row)
  } catch (err) {
    log.error('observer failed', { err: (err as Error).message })
  }
}

/** The writer's settings from the ingest config. */
function writerSettings(config: Config['ingest']) {
  return {
    batchSize: config.batchSize,
    flushIntervalMs: config.flushIntervalMs,
    commitWindowMs: config.commitWindowMs,
    concurrency: config.concurrentWrites,
    maxPendingRows: config.maxPendingRows,
    highWaterRows: config.backpressureRows,
  }
}

/**
 * Logs a rejected message, at most one line per key (device) per minute: one misconfigured ESP at
 * 1 Hz must not flood the log.
 */
function createRejectLog(log: Logger, now: () => number) {
  const last = new Map<string, number>()
  return (r: { key: string; deviceId: string | null; topic: string; reason: string }): void => {
    const t = now()
    if ((last.get(r.key) ?? -Infinity) + LOG_EVERY_MS > t) return
    if (last.size > 10_000) last.clear()
    last.set(r.key, t)
    log.warn('payload rejected', {
      deviceId: r.deviceId,
      topic: r.topic.slice(0, 200),
      reason: r.reason,
    })
  }
}

/**
 * The last retained status per topic. Retained status messages come back whenever a bridge
 * reconnects; storing the same bytes again made offline devices look online in the old stack
 * (docs/compatibility.md, "Edge status and the last will").
 */
function createRetainedStatuses() {
  const last = new Map<string, string>()
  return {
    /** Whether `payload` is the status last retained on `topic`; remembers it if not. */
    repeats(topic: string, payload: Buffer): boolean {
      const text = payload.toString('latin1')
      if (last.get(topic) === text) return true
      // Bounded like the other per-key maps: a flood of made-up device ids must not grow memory.
      if (last.size > 10_000) last.clear()
      last.set(topic, text)
      return false
    },
  }
}

/** Logs the stats once a minute, when they changed; the timer does not keep the process alive. */
function logSummaries(log: Logger, stats: () => IngestStats): NodeJS.Timeout {
  let lastSummary = ''
  const timer = setInterval(() => {
    const s = stats()
    const line = JSON.stringify(s)
    if (line !== lastSummary) log.info('ingest summary', s)
    lastSummary = line
  }, LOG_EVERY_MS)
  timer.unref()
  return timer
}

/** The reject row of a message: its text cleaned, its payload cut to REJECT_PAYLOAD_BYTES. */
function toReject(
  msg: { topic: string; clientId?: string | null | undefined; payload: Buffer },
  r: { deviceId: string | null; reason: string; receivedAt: Date },
): Reject {
  return {
    kind: 'reject',
    topic: clean(msg.topic),
    clientId: msg.clientId == null ? null : clean(msg.clientId),
    deviceId: r.deviceId === null ? null : clean(r.deviceId),
    reason: clean(r.reason),
    payload: msg.payload.subarray(0, REJECT_PAYLOAD_BYTES),
    payloadBytes: msg.payload.length,
    receivedAt: r.receivedAt,
  }
}

/** The reject row of a row PostgreSQL refused on its data (the writer isolates it). */
function refusedRow(row: Row, reason: string): Reject {
  if (row.kind === 'reject') return { ...row, reason }
  return toReject(
    { topic: `(row of ${row.kind})`, clientId: null, payload: Buffer.from(JSON.stringify(row)) },
    { deviceId: 'deviceId' in row ? row.deviceId : null, reason, receivedAt: new Date() },
  )
}

/**
 * What MQTT ingest would refuse in a data message on `topic` (the reason), or undefined: for HTTP
 * telemetry, which answers 400 with the same reasons before anything is queued.
 */
function checkData(
  ingest: { parseTopic: ReturnType<typeof createTopicParser>; maxPayloadBytes: number },
  topic: string,
  payload: Uint8Array,
): string | undefined {
  const route = ingest.parseTopic(topic)
  if (route.kind !== 'route')
    return route.kind === 'reject' ? route.reason : `topic ${topic} is not a data topic`
  if (payload.length > ingest.maxPayloadBytes)
    return `readings of one timestamp make ${payload.length} bytes, more than ingest.maxPayloadBytes (${ingest.maxPayloadBytes})`
  const d = decodePayload('data', payload)
  if (!d.ok) return d.reason
  const ts = parseTimestamp(d.value.timestamp, new Date())
  return ts.ok ? undefined : ts.reason
}

/** Text that PostgreSQL can store: no U+0000, no unpaired surrogates. */
function clean(s: string): string {
  return s.replaceAll('\u0000', '\ufffd').toWellFormed()
}

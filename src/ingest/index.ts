import { hash } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import type { Logger } from '../log/index.js'
import type { DedupKey, Reject, Row } from './records.js'
import { toRow } from './records.js'
import { ingestMetrics } from './metrics.js'
import { decodePayload, parseTimestamp } from './payloads.js'
import { createSpool } from './spool.js'
import { createStore, REDELIVERY_SLOTS, recentKeys, type DeviceReports } from './store.js'
import { createTopicParser, parseTopic, routeDevice } from './topic.js'
import { createWriter, type WriterStats } from './writer.js'

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
/** Message ids remembered per client for recognising redeliveries: as many as the database keeps. */
const RECENT_IDS = REDELIVERY_SLOTS
/** A client's history lookup that takes longer is abandoned: its messages are stored without it. */
const LOOKUP_TIMEOUT_MS = 2000

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  // If the timeout wins, p may still reject later: that must not become an unhandled rejection.
  p.catch(() => undefined)
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}
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
  const lastRejectLog = new Map<string, number>()
  // Retained status messages come back whenever a bridge reconnects; storing the same bytes again made
  // offline devices look online in the old stack (docs/compatibility.md, "Edge status and the last will").
  const lastRetainedStatus = new Map<string, string>()
  let summary: NodeJS.Timeout | undefined
  let lastSummary = ''

  const toReject = (
    msg: {
      topic: string
      clientId: string | null
      deviceId: string | null
      payload: Buffer
      receivedAt: Date
    },
    reason: string,
  ): Reject => ({
    kind: 'reject',
    topic: clean(msg.topic),
    clientId: msg.clientId === null ? null : clean(msg.clientId),
    deviceId: msg.deviceId === null ? null : clean(msg.deviceId),
    reason: clean(reason),
    payload: msg.payload.subarray(0, REJECT_PAYLOAD_BYTES),
    payloadBytes: msg.payload.length,
    receivedAt: msg.receivedAt,
  })

  const spool = createSpool({ dir: opts.spoolDir, maxBytes: config.spoolMaxBytes, log })
  // The last QoS 1/2 message ids per client (up to RECENT_IDS), loaded from ingest_dedup the first
  // time this process sees the client, so a redelivery after a restart is recognised too.
  const recent = new Map<string, Map<number, { digest: string; done: Promise<void> | undefined }>>()
  const loading = new Map<string, Promise<void>>()
  /** Clients to look up again (forget()): they may have published through another instance meanwhile. */
  const stale = new Set<string>()

  const parseTopic = createTopicParser()
  const writer = createWriter({
    db: opts.db,
    store: createStore(opts.deviceReports),
    log,
    spool,
    batchSize: config.batchSize,
    flushIntervalMs: config.flushIntervalMs,
    commitWindowMs: config.commitWindowMs,
    concurrency: config.concurrentWrites,
    maxPendingRows: config.maxPendingRows,
    highWaterRows: config.backpressureRows,
    toReject: (row, reason) =>
      row.kind === 'reject'
        ? { ...row, reason }
        : toReject(
            {
              topic: `(row of ${row.kind})`,
              clientId: null,
              deviceId: 'deviceId' in row ? row.deviceId : null,
              payload: Buffer.from(JSON.stringify(row)),
              receivedAt: new Date(),
            },
            reason,
          ),
  })

  function reject(
    msg: IncomingMessage,
    deviceId: string | null,
    reason: string,
    receivedAt: Date,
    dedup: DedupKey | undefined,
  ): Promise<void> | undefined {
    counts.rejected++
    const row: Row = toReject(
      {
        topic: msg.topic,
        clientId: msg.clientId ?? null,
        deviceId,
        payload: msg.payload,
        receivedAt,
      },
      reason,
    )
    if (dedup) row.dedup = dedup
    const done = push(row, msg)
    // At most one line per device per minute: one misconfigured ESP at 1 Hz must not flood the log.
    const key = deviceId ?? msg.clientId ?? msg.topic
    const t = now()
    if ((lastRejectLog.get(key) ?? -Infinity) + LOG_EVERY_MS <= t) {
      if (lastRejectLog.size > 10_000) lastRejectLog.clear()
      lastRejectLog.set(key, t)
      log.warn('payload rejected', { deviceId, topic: msg.topic.slice(0, 200), reason })
    }
    return done
  }

  function push(row: Row, msg: IncomingMessage): Promise<void> | undefined {
    const durable = (msg.qos ?? 0) > 0
    const done = writer.push(row, durable)
    if (durable) return done || undefined
    // QoS 0 needs no acknowledgement, but while the database lags, the broker waits on this before
    // reading more from the connection: TCP backpressure instead of an unbounded queue.
    return writer.room()
  }

  function dedupKey(msg: IncomingMessage): DedupKey | undefined {
    if (!msg.qos || msg.messageId === undefined || !msg.clientId) return undefined
    // sha1(topic NUL payload), hashed in one call: half the cost of a Hash object on the hot path.
    const buf = Buffer.allocUnsafe(Buffer.byteLength(msg.topic) + 1 + msg.payload.length)
    const n = buf.write(msg.topic)
    buf[n] = 0
    msg.payload.copy(buf, n + 1)
    const digest = hash('sha1', buf, 'base64')
    return { clientId: msg.clientId, messageId: msg.messageId, digest }
  }

  function remember(key: DedupKey, done: Promise<void> | undefined): void {
    let byId = recent.get(key.clientId)
    if (!byId) {
      byId = new Map()
      recent.set(key.clientId, byId)
    }
    byId.delete(key.messageId)
    byId.set(key.messageId, { digest: key.digest, done })
    // Map keeps insertion order: forget the oldest ids. A redelivery follows its original closely,
    // and a client reuses an id only after 65535 others, long after it left this window.
    if (byId.size > RECENT_IDS) byId.delete(byId.keys().next().value as number)
  }

  /** Loads a client's recent ids from the database once per process; messages wait for it in order. */
  function loadClient(clientId: string): Promise<void> | undefined {
    if (recent.has(clientId) && !stale.has(clientId)) return undefined
    stale.delete(clientId)
    // While writes fail the lookup would only add an outage's worth of latency to every ack.
    if (writer.failing) {
      recent.set(clientId, new Map())
      return undefined
    }
    let pending = loading.get(clientId)
    if (!pending) {
      pending = withTimeout(recentKeys(opts.db(), clientId, RECENT_IDS), LOOKUP_TIMEOUT_MS).then(
        (keys) => {
          const byId = recent.get(clientId) ?? new Map()
          for (const k of keys)
            if (!byId.has(k.messageId)) byId.set(k.messageId, { digest: k.digest, done: undefined })
          recent.set(clientId, byId)
        },
        // Database away: no history to compare with; the message is stored (at-least-once).
        () => void recent.set(clientId, recent.get(clientId) ?? new Map()),
      )
      pending.finally(() => loading.delete(clientId)).catch(() => undefined)
      loading.set(clientId, pending)
      if (recent.size + loading.size > 50_000) recent.clear()
    }
    return pending
  }

  /** A message this process has already stored (or is storing) under the same id and content. */
  function duplicateOf(key: DedupKey): { done: Promise<void> | undefined } | undefined {
    const seen = recent.get(key.clientId)?.get(key.messageId)
    return seen && seen.digest === key.digest ? seen : undefined
  }

  /** Stores one message; for a QoS 1/2 message, resolves once it is durable. Never throws. */
  function ingest(msg: IncomingMessage, dedup: DedupKey | undefined): Promise<void> | undefined {
    const done = route(msg, dedup)
    if (dedup) remember(dedup, done)
    return done
  }

  /** Topic → route → row, into the writer; the old accept() body. */
  function route(msg: IncomingMessage, dedup: DedupKey | undefined): Promise<void> | undefined {
    const receivedAt = msg.receivedAt ?? new Date()
    const parsed = parseTopic(msg.topic)
    if (parsed.kind === 'ignore') {
      counts.ignored++
      return undefined
    }
    if (parsed.kind === 'reject') return reject(msg, null, parsed.reason, receivedAt, dedup)
    const deviceId = routeDevice(parsed.route)
    if (msg.payload.length > config.maxPayloadBytes) {
      return reject(
        msg,
        deviceId,
        `payload is ${msg.payload.length} bytes, more than the limit of ${config.maxPayloadBytes}`,
        receivedAt,
        dedup,
      )
    }
    if (parsed.route.type === 'status' && msg.retain) {
      const text = msg.payload.toString('latin1')
      if (lastRetainedStatus.get(msg.topic) === text) {
        counts.duplicates++
        return undefined
      }
      // Bounded like the other per-key maps: a flood of made-up device ids must not grow memory.
      if (lastRetainedStatus.size > 10_000) lastRetainedStatus.clear()
      lastRetainedStatus.set(msg.topic, text)
    }
    let result: ReturnType<typeof toRow>
    try {
      result = toRow(parsed.route, msg.payload, receivedAt)
    } catch (err) {
      // toRow is pure and total; reaching this is our bug, and it must still not cost the message.
      result = { ok: false, reason: `internal error: ${(err as Error).message}` }
    }
    if (!result.ok) return reject(msg, deviceId, result.reason, receivedAt, dedup)
    counts.accepted++
    const row = result.row
    if (dedup) row.dedup = dedup
    const done = push(row, msg)
    if (opts.observe && (row.kind === 'status' || row.kind === 'ota')) {
      try {
        opts.observe(row)
      } catch (err) {
        log.error('observer failed', { err: (err as Error).message })
      }
    }
    return done
  }

  const stats = (): IngestStats => ({ ...counts, ...writer.stats() })

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
        const dup = duplicateOf(key)
        if (!dup) return ingest(msg, key)
        counts.duplicates++
        return dup.done
      }
      const load = loadClient(key.clientId)
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
      summary = setInterval(() => {
        const s = stats()
        const line = JSON.stringify(s)
        if (line !== lastSummary) log.info('ingest summary', s)
        lastSummary = line
      }, LOG_EVERY_MS)
      summary.unref()
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
    forget(clientId: string): void {
      if (recent.has(clientId)) stale.add(clientId)
    },
    /** Writes what is pending now (tests and shutdown). */
    flush: () => writer.flush(),
    stats,
    /** Counters, gauges and batch-write durations for /metrics. */
    metrics: () => ingestMetrics(stats(), writer.flushDurations()),
    /**
     * What MQTT ingest would refuse in a data message on `topic` (the reason), or undefined: for HTTP
     * telemetry, which answers 400 with the same reasons before anything is queued.
     */
    checkData(topic: string, payload: Uint8Array): string | undefined {
      const route = parseTopic(topic)
      if (route.kind !== 'route')
        return route.kind === 'reject' ? route.reason : `topic ${topic} is not a data topic`
      if (payload.length > config.maxPayloadBytes)
        return `readings of one timestamp make ${payload.length} bytes, more than ingest.maxPayloadBytes (${config.maxPayloadBytes})`
      const d = decodePayload('data', payload)
      if (!d.ok) return d.reason
      const ts = parseTimestamp(d.value.timestamp, new Date())
      return ts.ok ? undefined : ts.reason
    },
    health(): { ok: boolean; failing: boolean; degraded: boolean } {
      return { ok: !writer.degraded, failing: writer.failing, degraded: writer.degraded }
    },
    /** Rows are arriving faster than they are written (a burst): background work can wait for it to end. */
    busy: (): boolean => writer.busy,
  }
}

export type Ingest = ReturnType<typeof createIngest>

/** Text that PostgreSQL can store: no U+0000, no unpaired surrogates. */
function clean(s: string): string {
  return s.replaceAll('\u0000', '\ufffd').toWellFormed()
}

import type { Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import type { Logger } from '../log/index.js'
import type { Reject, Row } from './records.js'
import { toRow } from './records.js'
import { parseTopic, routeDevice } from './topic.js'
import { createWriter, type WriterStats } from './writer.js'

export { parseTopic, type Route, type TopicResult } from './topic.js'
export { decodePayload, parseTimestamp } from './payloads.js'

/** One message as the broker hands it over. */
export type IncomingMessage = {
  topic: string
  payload: Buffer
  clientId?: string | null
  retain?: boolean
  receivedAt?: Date
}

export type IngestStats = WriterStats & { received: number; accepted: number; rejected: number; ignored: number; duplicates: number }

export type IngestOptions = {
  config: Config['ingest']
  db: () => Kysely<DB>
  log: Logger
  /** Injectable clock for the once-a-minute log limits. */
  now?: () => number
}

/** Raw bytes kept per reject: enough to see what was wrong without storing a flood. */
const REJECT_PAYLOAD_BYTES = 4096
const LOG_EVERY_MS = 60_000

/**
 * Turns broker messages into rows: topic → route, payload → validated row, into the batch writer.
 * accept() never throws and never waits on the database (design §3.9.1); bad input becomes a reject row.
 */
export function createIngest(opts: IngestOptions) {
  const { log, config } = opts
  const now = opts.now ?? Date.now
  const counts = { received: 0, accepted: 0, rejected: 0, ignored: 0, duplicates: 0 }
  const lastRejectLog = new Map<string, number>()
  // Retained status messages come back whenever a bridge reconnects; storing the same bytes again made
  // offline devices look online in the old stack (contract §3.5).
  const lastRetainedStatus = new Map<string, string>()
  let summary: NodeJS.Timeout | undefined
  let lastSummary = ''

  const toReject = (msg: { topic: string; clientId: string | null; deviceId: string | null; payload: Buffer; receivedAt: Date }, reason: string): Reject => ({
    kind: 'reject',
    topic: clean(msg.topic),
    clientId: msg.clientId === null ? null : clean(msg.clientId),
    deviceId: msg.deviceId === null ? null : clean(msg.deviceId),
    reason: clean(reason),
    payload: msg.payload.subarray(0, REJECT_PAYLOAD_BYTES),
    payloadBytes: msg.payload.length,
    receivedAt: msg.receivedAt,
  })

  const writer = createWriter({
    db: opts.db,
    log,
    batchSize: config.batchSize,
    flushIntervalMs: config.flushIntervalMs,
    maxPendingRows: config.maxPendingRows,
    toReject: (row, reason) =>
      row.kind === 'reject'
        ? { ...row, reason }
        : toReject({ topic: `(row of ${row.kind})`, clientId: null, deviceId: 'deviceId' in row ? row.deviceId : null, payload: Buffer.from(JSON.stringify(row)), receivedAt: new Date() }, reason),
  })

  function reject(msg: IncomingMessage, deviceId: string | null, reason: string, receivedAt: Date): void {
    counts.rejected++
    writer.push(toReject({ topic: msg.topic, clientId: msg.clientId ?? null, deviceId, payload: msg.payload, receivedAt }, reason))
    // At most one line per device per minute: one misconfigured ESP at 1 Hz must not flood the log.
    const key = deviceId ?? msg.clientId ?? msg.topic
    const t = now()
    if ((lastRejectLog.get(key) ?? -Infinity) + LOG_EVERY_MS <= t) {
      if (lastRejectLog.size > 10_000) lastRejectLog.clear()
      lastRejectLog.set(key, t)
      log.warn('payload rejected', { deviceId, topic: msg.topic.slice(0, 200), reason })
    }
  }

  const stats = (): IngestStats => ({ ...counts, ...writer.stats() })

  return {
    name: 'ingest',
    /** Routes, validates and queues one message. Never throws. */
    accept(msg: IncomingMessage): void {
      counts.received++
      const receivedAt = msg.receivedAt ?? new Date()
      const parsed = parseTopic(msg.topic)
      if (parsed.kind === 'ignore') {
        counts.ignored++
        return
      }
      if (parsed.kind === 'reject') return reject(msg, null, parsed.reason, receivedAt)
      const deviceId = routeDevice(parsed.route)
      if (msg.payload.length > config.maxPayloadBytes) {
        return reject(msg, deviceId, `payload is ${msg.payload.length} bytes, more than the limit of ${config.maxPayloadBytes}`, receivedAt)
      }
      if (parsed.route.type === 'status' && msg.retain) {
        const text = msg.payload.toString('latin1')
        if (lastRetainedStatus.get(msg.topic) === text) {
          counts.duplicates++
          return
        }
        lastRetainedStatus.set(msg.topic, text)
      }
      let result: ReturnType<typeof toRow>
      try {
        result = toRow(parsed.route, msg.payload, receivedAt)
      } catch (err) {
        // toRow is pure and total; reaching this is our bug, and it must still not cost the message.
        result = { ok: false, reason: `internal error: ${(err as Error).message}` }
      }
      if (!result.ok) return reject(msg, deviceId, result.reason, receivedAt)
      counts.accepted++
      writer.push(result.row as Row)
    },
    async start(): Promise<void> {
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
    /** Writes what is pending now (tests and shutdown). */
    flush: () => writer.flush(),
    stats,
    health(): { ok: boolean; failing: boolean } {
      return { ok: !writer.failing, failing: writer.failing }
    },
  }
}

export type Ingest = ReturnType<typeof createIngest>

/** Text that PostgreSQL can store: no U+0000, no unpaired surrogates. */
function clean(s: string): string {
  return s.replaceAll('\u0000', '\ufffd').toWellFormed()
}

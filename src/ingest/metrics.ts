import type { HistogramSnapshot } from '../util/histogram.js'
import { histogramMetric, type Metric } from '../util/metric.js'

const COUNTERS: Record<string, string> = {
  received: 'MQTT messages seen by ingest.',
  accepted: 'Messages turned into rows.',
  rejected: 'Messages kept in ingest_rejects (bad topic, payload or size).',
  ignored: 'Messages on topics paku does not store.',
  duplicates: 'Redeliveries recognised and not stored twice.',
  written: 'Rows committed to PostgreSQL.',
  spooled: 'Rows written to the on-disk spool during a database outage.',
  replayed: 'Spooled rows replayed into PostgreSQL.',
  dropped: 'QoS 0 rows dropped because the in-memory queue was full.',
  flushes: 'Batch writes.',
  failedFlushes: 'Batch writes that failed (and were retried or spooled).',
}
const GAUGES: Record<string, string> = {
  pending: 'Rows waiting in memory for the next batch.',
  waiting: 'QoS 1/2 messages waiting for their acknowledgement.',
  spoolBytes: 'Bytes in the on-disk spool.',
  lastFlushMs: 'Duration of the last batch write in milliseconds.',
}

/** Ingest's counters and its batch-write durations as Prometheus metrics (the old /metrics had none). */
export function ingestMetrics(
  s: Record<string, unknown>,
  flushDurations: HistogramSnapshot,
): Metric[] {
  const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
  return [
    ...Object.entries(COUNTERS).map(([k, help]) => ({
      name: `paku_ingest_${snake(k)}_total`,
      help,
      type: 'counter' as const,
      samples: [{ value: Number(s[k] ?? 0) }],
    })),
    ...Object.entries(GAUGES).map(([k, help]) => ({
      name: `paku_ingest_${snake(k)}`,
      help,
      type: 'gauge' as const,
      samples: [{ value: Number(s[k] ?? 0) }],
    })),
    histogramMetric(
      'paku_ingest_flush_duration_seconds',
      'Duration of the batch writes that committed (a QoS 1 PUBACK waits for one).',
      flushDurations,
    ),
  ]
}

import { randomUUID } from 'node:crypto'
import { mkdirSync, readdirSync, statSync } from 'node:fs'
import { open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../log/index.js'
import type { Row } from './records.js'

/** One spooled batch: its id makes the replay idempotent (ingest_spool_batches). */
export type SpooledBatch = { id: string; rows: Row[] }

export type SpoolOptions = {
  dir: string
  /** Appends that would grow the spool past this are refused: the caller applies backpressure. */
  maxBytes: number
  /** A segment file is closed and a new one started past this size. */
  segmentBytes?: number
  log: Logger
}

const SEGMENT = /^(\d{12})\.jsonl$/

/**
 * The on-disk spool for database outages: append-only JSON-lines segment files, one line per batch,
 * fsynced before append() resolves (so a QoS 1 PUBACK may follow). Replayed oldest first; a segment is
 * deleted once all its batches are in PostgreSQL. A torn last line (crash mid-append) was never
 * acknowledged and is skipped.
 */
export function createSpool(opts: SpoolOptions) {
  const segmentBytes = opts.segmentBytes ?? 16 * 1024 * 1024
  // Oldest first: [segment number, bytes].
  let segments: Array<{ n: number; bytes: number; sealed?: boolean }> = []
  let total = 0

  const path = (n: number) => join(opts.dir, `${String(n).padStart(12, '0')}.jsonl`)

  return {
    /** Finds segments left by an earlier run (acknowledged data that still has to be written). */
    open(): void {
      mkdirSync(opts.dir, { recursive: true })
      segments = readdirSync(opts.dir)
        .map((f) => SEGMENT.exec(f))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => ({ n: Number(m[1]), bytes: statSync(join(opts.dir, m[0])).size }))
        .sort((a, b) => a.n - b.n)
      total = segments.reduce((s, x) => s + x.bytes, 0)
      if (segments.length > 0)
        opts.log.warn('spool has batches from an earlier run; replaying them', {
          segments: segments.length,
          bytes: total,
        })
    },
    get empty(): boolean {
      return segments.length === 0
    },
    get bytes(): number {
      return total
    },
    get segments(): number {
      return segments.length
    },
    /** Appends a batch durably; false (and nothing written) when the spool is full. */
    async append(rows: readonly Row[]): Promise<boolean> {
      const line = JSON.stringify({ id: randomUUID(), rows: rows.map(encodeRow) }) + '\n'
      const size = Buffer.byteLength(line)
      if (total + size > opts.maxBytes) return false
      let last = segments.at(-1)
      if (!last || last.sealed || last.bytes >= segmentBytes) {
        last = { n: (last?.n ?? 0) + 1, bytes: 0 }
        segments.push(last)
      }
      const fh = await open(path(last.n), 'a')
      try {
        await fh.write(line)
        await fh.sync()
      } finally {
        await fh.close()
      }
      last.bytes += size
      total += size
      return true
    },
    /** The batches of the oldest segment, in order. */
    async head(): Promise<{ segment: number; batches: SpooledBatch[] } | undefined> {
      const first = segments[0]
      if (!first) return undefined
      // Appends go to a new segment from now on, so drop() never deletes a batch this read did not see.
      first.sealed = true
      const text = await readFile(path(first.n), 'utf8')
      const batches: SpooledBatch[] = []
      for (const line of text.split('\n')) {
        if (!line) continue
        try {
          const parsed = JSON.parse(line) as { id: string; rows: EncodedRow[] }
          batches.push({ id: parsed.id, rows: parsed.rows.map(decodeRow) })
        } catch {
          opts.log.warn('skipping a torn spool line (written during a crash, never acknowledged)', {
            segment: first.n,
          })
        }
      }
      return { segment: first.n, batches }
    },
    /** Removes the oldest segment after all of its batches were written. */
    async drop(segment: number): Promise<void> {
      const i = segments.findIndex((s) => s.n === segment)
      if (i < 0) return
      const [gone] = segments.splice(i, 1)
      total -= gone?.bytes ?? 0
      await unlink(path(segment))
    },
  }
}

export type Spool = ReturnType<typeof createSpool>

type EncodedRow = Record<string, unknown>

const DATE_FIELDS = ['ts', 'receivedAt'] as const

/** Rows carry Dates and Buffers; JSON needs them as ISO strings and base64. */
export function encodeRow(row: Row): EncodedRow {
  const out: EncodedRow = { ...row }
  for (const f of DATE_FIELDS)
    if (f in row) out[f] = ((row as Record<string, unknown>)[f] as Date).toISOString()
  if (row.kind === 'reject') out.payload = row.payload.toString('base64')
  return out
}

export function decodeRow(raw: EncodedRow): Row {
  const row: Record<string, unknown> = { ...raw }
  for (const f of DATE_FIELDS) if (typeof row[f] === 'string') row[f] = new Date(row[f] as string)
  if (row.kind === 'reject') row.payload = Buffer.from(row.payload as string, 'base64')
  return row as Row
}

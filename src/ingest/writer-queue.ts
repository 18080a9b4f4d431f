import type { Row } from './records.js'

/** An acknowledgement: resolves the promise of a producer that waits for durability. */
export type Ack = (() => void) | undefined

/** Rows taken from the queue together, with the acknowledgements of those whose producer waits. */
export type Batch = {
  rows: Row[]
  acks: Ack[]
  durable: number
  ordered: number
  /** The queue's arrival count when the batch was taken. */
  arrivals: number
}

/** Measurements and rejects may be written in any order; every other kind keeps arrival order. */
const unordered = (row: Row) => row.kind === 'measurement' || row.kind === 'reject'

/**
 * The writer's rows in memory: those queued, oldest first, each with the acknowledgement of its
 * producer (a parallel array: no object per row), and counts of those taken by steps in progress.
 */
export function createQueue() {
  let rows: Row[] = []
  let acks: Ack[] = []
  const q = {
    /** Queued rows whose producer waits, and queued rows that must keep their order. */
    durable: 0,
    ordered: 0,
    /** Rows taken by steps in progress and not yet durable, and those of them whose producer waits. */
    taken: 0,
    takenDurable: 0,
    /** Rows queued so far. */
    arrivals: 0,
    get length(): number {
      return rows.length
    },
    /** Queues a row at the tail. */
    push(row: Row, ack: Ack): void {
      q.arrivals++
      rows.push(row)
      acks.push(ack)
      if (ack) q.durable++
      if (!unordered(row)) q.ordered++
    },
    /** Takes the oldest `n` queued rows. */
    take(n: number): Batch {
      const b: Batch = {
        rows: rows.splice(0, n),
        acks: acks.splice(0, n),
        durable: 0,
        ordered: 0,
        arrivals: q.arrivals,
      }
      for (let i = 0; i < n; i++) {
        if (b.acks[i]) b.durable++
        if (!unordered(b.rows[i] as Row)) b.ordered++
      }
      q.durable -= b.durable
      q.ordered -= b.ordered
      q.taken += n
      q.takenDurable += b.durable
      return b
    },
    /** A taken batch that did not become durable goes back to the head of the queue. */
    putBack(b: Batch): void {
      rows = b.rows.concat(rows)
      acks = b.acks.concat(acks)
      q.durable += b.durable
      q.ordered += b.ordered
      q.taken -= b.rows.length
      q.takenDurable -= b.durable
    },
    /** A taken batch is committed or spooled: its producers hear so. */
    settle(b: Batch): void {
      q.taken -= b.rows.length
      q.takenDurable -= b.durable
      if (b.durable > 0) for (const ack of b.acks) ack?.()
    },
    /** Empties the queue (its acknowledgements never resolve); returns how many rows it held. */
    clear(): number {
      const n = rows.length
      rows = []
      acks = []
      q.durable = 0
      q.ordered = 0
      return n
    },
  }
  return q
}

export type Queue = ReturnType<typeof createQueue>

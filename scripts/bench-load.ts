/**
 * The benchmark's load generator (scripts/bench.ts runs it as a child process, so its CPU is its own):
 * N simulated Ruuvi-style devices, one MQTT connection each, publishing to {site}/sensors/{device}/data
 * with the same payload shape as the old stack's own load generator (loadgen.mjs among its bench files;
 * per-device `measurement_sequence`, so the harness can tell lost rows from duplicated ones).
 *
 *   node --import tsx scripts/bench-load.ts --port 1883 --devices 100 --messages 50000 --qos 1 [--rate 1000]
 *
 * --rate 0 (default): as fast as the broker takes them, each device keeping up to --inflight publishes
 * outstanding (QoS 0: not yet handed to the socket, which TCP backpressure bounds; QoS 1: not yet
 * acknowledged). --rate R: R msg/s in total, round-robin over the devices, no in-flight cap. Prints one
 * JSON object on stdout: sent, errors, first/last publish times (epoch ms) and, for QoS 1, PUBACK latency
 * percentiles and the spells of PUBACKs over 50 ms.
 *
 * --hold S: once the messages are done (at once with --messages 0), every device stays connected for S
 * more seconds and then disconnects, sending nothing but a PINGREQ every 30 s, each on its own cycle from
 * a random phase, as a fleet of independent idle devices does (the broker's idle cost). With --hold, a line
 * {"connected": N, "atMs": epoch ms} comes first on stdout, once every device is connected.
 *
 * --gated: for a harness that measures only the messages, not the connecting and disconnecting: once every
 * device is connected it prints the "connected" line and waits for a line on stdin before publishing; once
 * the messages are done it prints its result (cpuS then counts from that line on stdin) and keeps the
 * devices connected until stdin ends. A stdin that ends before the first line (the harness is gone) ends
 * the process.
 *
 * Hand-written on raw sockets rather than mqtt.js because this process shares the machine's two cores with
 * the system under test, so every microsecond of CPU it spends is taken from paku and PostgreSQL. Measured
 * here (2 vCPU VM, 50k messages from 100 devices to Mosquitto on loopback, cpuS less the start-up and
 * connecting of a 0-message run): mqtt.js ~15 µs per QoS 0 and ~38 µs per QoS 1 message (cpuS 1.0–1.5 and
 * 2.2–2.6 s, start-up 0.5 s), this ~4 and ~10 µs (0.47–0.56 and 0.75–0.94 s, start-up 0.3 s). What is left is
 * building each message's JSON, which a device does too, and at QoS 1 mostly the system calls: a write
 * each time PUBACKs free the window, a read each time some arrive.
 *
 * The MQTT 3.1.1 it speaks, client side only: CONNECT (clean session, keepalive 60, no credentials) and
 * its CONNACK; PUBLISH at QoS 0 or 1 (packet ids 1..65535, never one still in flight) and PUBACK;
 * PINGREQ after 30 s without a write and PINGRESP (30 s more without a byte from the broker and the
 * connection is given up); DISCONNECT. No subscriptions, QoS 2, retained messages, will or reconnects: a
 * connection that drops counts whatever it had not finished as errors, and the run goes on with the others.
 */
import { connect, type Socket } from 'node:net'
import { parseArgs } from 'node:util'

const { values: o } = parseArgs({
  options: {
    port: { type: 'string', default: '1883' },
    devices: { type: 'string', default: '100' },
    messages: { type: 'string', default: '50000' },
    rate: { type: 'string', default: '0' },
    qos: { type: 'string', default: '0' },
    inflight: { type: 'string', default: '10' },
    site: { type: 'string', default: 'bench' },
    prefix: { type: 'string', default: 'ruuvi' },
    hold: { type: 'string', default: '0' },
    gated: { type: 'boolean', default: false },
  },
})
const PORT = Number(o.port)
const N = Number(o.devices)
const TOTAL = Number(o.messages)
const RATE = Number(o.rate)
const QOS = Number(o.qos) as 0 | 1
const INFLIGHT = Math.max(1, Number(o.inflight))
const HOLD_S = Number(o.hold)
/** Half the keepalive (60 s) the CONNECT promises, as many device clients ping. */
const PING_MS = 30_000
// Paced runs have no in-flight cap of their own; 65535 packet ids per connection are the hard one.
const CAP = Math.min(RATE > 0 ? Infinity : INFLIGHT, 65535)
// One socket.write per pump carries up to this much: big enough to amortise the system call (at QoS 0
// that is most of the cost per message), below the socket's highWaterMark (16 KiB on Node 20) so a write
// into an empty buffer does not report backpressure by itself.
const WRITE_BYTES = 12 * 1024

const LOCATIONS = [
  'cabin',
  'cockpit',
  'outside',
  'fridge',
  'bedroom',
  'bathroom',
  'garage',
  'engine',
]
const hex = (b: number) => b.toString(16).padStart(2, '0').toUpperCase()
const devices = Array.from({ length: N }, (_, i) => {
  const id = `${o.prefix}_${String(i).padStart(4, '0')}`
  const location = LOCATIONS[i % LOCATIONS.length] as string
  const mac = ['C7', hex((i >> 16) & 255), hex((i >> 8) & 255), hex(i & 255), '1A', '2B'].join(':')
  return {
    id,
    topic: `${o.site}/sensors/${id}/data`,
    // The JSON between the timestamp and the first reading, the same for every message of the device.
    middle: `","device_id":${JSON.stringify(id)},"location":${JSON.stringify(location)},"mac":${JSON.stringify(mac)},"metrics":{"temperature_c":`,
  }
})
type Device = (typeof devices)[number]
const r1 = (lo: number, hi: number) => Math.round((lo + Math.random() * (hi - lo)) * 100) / 100
const ri = (lo: number, hi: number) => Math.floor(lo + Math.random() * (hi - lo + 1))

// new Date().toISOString() has millisecond resolution and takes ~0.9 µs; within one millisecond it is
// the same string, so it is made once per millisecond.
let isoMs = -1
let iso = ''
function timestamp(): string {
  const ms = Date.now()
  if (ms !== isoMs) {
    isoMs = ms
    iso = new Date(ms).toISOString()
  }
  return iso
}

/**
 * One message, made when it is published: byte for byte what JSON.stringify gives for
 * { timestamp, device_id, location, mac, metrics: { temperature_c, humidity_percent, pressure_hpa,
 * battery_mv, tx_power_dbm, movement_counter, measurement_sequence } } (numbers print the same in both),
 * in half the time, because the parts fixed per device are joined rather than serialised again.
 */
function payload(d: Device, seq: number): string {
  return `{"timestamp":"${timestamp()}${d.middle}${r1(-10, 35)},"humidity_percent":${r1(20, 90)},"pressure_hpa":${r1(960, 1040)},"battery_mv":${ri(2400, 3100)},"tx_power_dbm":4,"movement_counter":${ri(0, 255)},"measurement_sequence":${seq}}}`
}

// ---------------------------------------------------------------- packets

/** MQTT's "remaining length": 7 bits a byte, least significant first, high bit set while more follow. */
function remainingLength(n: number): number[] {
  const out: number[] = []
  do {
    const b = n % 128
    n = Math.floor(n / 128)
    out.push(n > 0 ? b | 128 : b)
  } while (n > 0)
  return out
}

/** A UTF-8 string field: two length bytes, then the bytes. */
function stringField(s: string): Buffer {
  const b = Buffer.from(s)
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 255]), b])
}

function connectPacket(clientId: string): Buffer {
  // Protocol name "MQTT", level 4 (3.1.1), flags: clean session only, keepalive 60 s.
  const rest = Buffer.concat([
    stringField('MQTT'),
    Buffer.from([4, 0x02, 0, 60]),
    stringField(clientId),
  ])
  return Buffer.concat([Buffer.from([0x10, ...remainingLength(rest.length)]), rest])
}

const PINGREQ = Buffer.from([0xc0, 0])
const DISCONNECT = Buffer.from([0xe0, 0])
const CONNACK_CODES = [
  'accepted',
  'unacceptable protocol version',
  'identifier rejected',
  'server unavailable',
  'bad user name or password',
  'not authorized',
]

// ---------------------------------------------------------------- connections

/** The publishes of one write; every QoS 1 id of it points here, so the write time is set once. */
type Batch = { t0: number }

type Conn = {
  i: number
  sock: Socket
  topic: Buffer // the PUBLISH topic field, built once
  state: 'connecting' | 'open' | 'closing' | 'closed'
  onConnack: (code: number) => void
  rest: Buffer | null // the start of a packet whose end has not arrived yet
  blocked: boolean // the last write reported backpressure: wait for 'drain'
  soon: boolean // a pump is queued with setImmediate
  owed: number // messages given to this device and not yet written
  acks: Map<number, Batch> // QoS 1 packet ids written and not yet acknowledged
  nextId: number
  seq: number
  lastWrite: number
  pingSent: number // when a PINGREQ went out that nothing has answered yet, or 0
  error: string
}

const stats = { sent: 0, errors: 0, firstPublishMs: 0, lastDoneMs: 0 }
const latencies = new Float64Array(QOS > 0 ? TOTAL : 0)
let acked = 0
/**
 * At a fixed rate, the PUBACKs slower than SLOW_MS: when their message was written (performance.now())
 * and how long the ack took. (At maximum rate most are: the window is full by design.)
 */
const SLOW_MS = 50
const slow: Array<{ t0: number; ms: number }> = []
let firstPublishPerf = 0
// Messages neither sent nor counted as errors; the run ends when it reaches 0.
let pending = TOTAL
let live = 0
let lost = 0
let firstLoss = ''
let allDone = () => {}
const finished = new Promise<void>((r) => (allDone = r))

function settle(sent: number, errors: number): void {
  stats.sent += sent
  stats.errors += errors
  pending -= sent + errors
  if (pending === 0) allDone()
}

function open(i: number, tag: string): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const sock = connect(PORT, '127.0.0.1')
    sock.setNoDelay(true)
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error('no CONNACK within 10 s'))
    }, 10_000)
    const c: Conn = {
      i,
      sock,
      topic: stringField((devices[i] as Device).topic),
      state: 'connecting',
      onConnack: (code) => {
        clearTimeout(timer)
        if (code !== 0) {
          sock.destroy()
          return reject(
            new Error(
              `broker refused the connection: CONNACK return code ${code} (${CONNACK_CODES[code] ?? 'unknown'})`,
            ),
          )
        }
        c.state = 'open'
        live++
        resolve(c)
      },
      rest: null,
      blocked: false,
      soon: false,
      owed: 0,
      acks: new Map(),
      nextId: 1,
      seq: 0,
      lastWrite: performance.now(),
      pingSent: 0,
      error: '',
    }
    sock.once('connect', () => sock.write(connectPacket(`bench-${tag}-${i}`)))
    sock.on('data', (chunk: Buffer) => onData(c, chunk))
    sock.on('drain', () => {
      c.blocked = false
      pump(c)
    })
    sock.on('error', (err) => (c.error ||= err.message))
    sock.once('close', () => {
      if (c.state === 'connecting') {
        clearTimeout(timer)
        reject(new Error(c.error || 'connection closed before CONNACK'))
      } else if (c.state === 'open') dropped(c)
      c.state = 'closed'
    })
  })
}

/** A connection gone mid-run: what it had not finished can no longer be, so it counts as errors. */
function dropped(c: Conn): void {
  lost++
  firstLoss ||= `${devices[c.i]?.id}: ${c.error || 'closed by the broker'}`
  const unfinished = c.owed + c.acks.size
  c.owed = 0
  c.acks.clear()
  c.state = 'closed'
  live--
  stats.lastDoneMs = Date.now()
  settle(0, unfinished)
}

/** Ends a connection that broke the protocol or stopped answering; dropped() counts what it had not finished. */
function giveUp(c: Conn, why: string): void {
  c.error ||= why
  c.sock.destroy()
}

/** Reads whole packets out of the byte stream, which may split a packet or join several in one chunk. */
function onData(c: Conn, chunk: Buffer): void {
  c.pingSent = 0 // any bytes answer a PINGREQ as well as its PINGRESP: the broker is there
  const buf = c.rest ? Buffer.concat([c.rest, chunk]) : chunk
  const end = buf.length
  let off = 0
  let gotAck = false
  while (end - off >= 2) {
    let len = 0
    let mul = 1
    let p = off + 1
    let b = 128
    while (b & 128) {
      if (p === end) break
      if (p - off > 4) return giveUp(c, 'protocol error: remaining length longer than 4 bytes')
      b = buf[p++] as number
      len += (b & 127) * mul
      mul *= 128
    }
    if (b & 128 || p + len > end) break // the rest of this packet is still on its way
    const type = (buf[off] as number) >> 4
    if (type === 4 && len === 2 && c.state === 'open') {
      ack(c, buf.readUInt16BE(p))
      gotAck = true
    } else if (type === 2 && len === 2 && c.state === 'connecting')
      c.onConnack(buf[p + 1] as number)
    else if (type === 13 && len === 0) {
      // PINGRESP: the broker is alive, nothing to do.
    } else
      return giveUp(
        c,
        `protocol error: unexpected packet type ${type} (remaining length ${len}) while ${c.state}`,
      )
    off = p + len
  }
  c.rest = off < end ? Buffer.from(buf.subarray(off)) : null
  if (gotAck) {
    stats.lastDoneMs = Date.now()
    pump(c)
  }
}

function ack(c: Conn, id: number): void {
  const batch = c.acks.get(id)
  // An id not in flight (a duplicate PUBACK) acknowledges nothing; counting it would inflate "sent".
  if (!batch) return
  c.acks.delete(id)
  const ms = performance.now() - batch.t0
  latencies[acked++] = ms
  if (RATE > 0 && ms > SLOW_MS) slow.push({ t0: batch.t0, ms })
  settle(1, 0)
}

/** Gives a device n more messages to publish, or counts them as errors if its connection is gone. */
function give(c: Conn, n: number): void {
  if (c.state !== 'open') return settle(0, n)
  c.owed += n
}

/**
 * Writes as many of the device's owed messages as its window allows in one socket.write. Called when
 * messages are given, when PUBACKs free the window and on 'drain'; goes on in a later turn of the event
 * loop if more could be written, so that the devices take turns as they did with mqtt.js.
 */
function pump(c: Conn): void {
  if (c.state !== 'open' || c.blocked || c.owed === 0) return
  const room = QOS === 0 ? c.owed : Math.min(c.owed, CAP - c.acks.size)
  if (room <= 0) return
  const batch: Batch = { t0: 0 }
  const { buf, count } = publishes(c, room, batch)
  c.owed -= count
  if (!stats.firstPublishMs) {
    stats.firstPublishMs = Date.now()
    firstPublishPerf = performance.now()
  }
  batch.t0 = c.lastWrite = performance.now()
  c.blocked = !c.sock.write(buf)
  if (QOS === 0) {
    // What mqtt.js called done at QoS 0: handed to the socket.
    stats.lastDoneMs = Date.now()
    settle(count, 0)
  }
  if (!c.blocked && count < room && !c.soon) {
    c.soon = true
    setImmediate(() => {
      c.soon = false
      pump(c)
    })
  }
}

const bodies: string[] = []
const lengths: number[] = []

/** Up to n PUBLISH packets of device c in one buffer (fewer if they would pass WRITE_BYTES). */
function publishes(c: Conn, n: number, batch: Batch): { buf: Buffer; count: number } {
  const d = devices[c.i] as Device
  const topic = c.topic
  const idBytes = QOS > 0 ? 2 : 0
  let size = 0
  let count = 0
  while (count < n && (count === 0 || size < WRITE_BYTES)) {
    const body = payload(d, c.seq++)
    const len = Buffer.byteLength(body)
    bodies[count] = body
    lengths[count] = len
    size += 5 + topic.length + idBytes + len // 5: type byte + the longest remaining length
    count++
  }
  const buf = Buffer.allocUnsafe(size)
  let pos = 0
  for (let k = 0; k < count; k++) {
    buf[pos++] = 0x30 | (QOS << 1) // PUBLISH, no DUP, QoS, no RETAIN
    let rl = topic.length + idBytes + (lengths[k] as number)
    do {
      const b = rl & 127
      rl >>>= 7
      buf[pos++] = rl > 0 ? b | 128 : b
    } while (rl > 0)
    buf.set(topic, pos)
    pos += topic.length
    if (QOS > 0) {
      const id = nextId(c)
      c.acks.set(id, batch)
      buf[pos++] = id >> 8
      buf[pos++] = id & 255
    }
    pos += buf.write(bodies[k] as string, pos, 'utf8')
  }
  return { buf: buf.subarray(0, pos), count }
}

/** The next packet id after the last one, 1..65535, skipping ids still in flight (the caller keeps one free). */
function nextId(c: Conn): number {
  let id = c.nextId
  while (c.acks.has(id)) id = id === 65535 ? 1 : id + 1
  c.nextId = id === 65535 ? 1 : id + 1
  return id
}

// ---------------------------------------------------------------- the run

const tag = Math.random().toString(36).slice(2, 8)
const conns: Conn[] = []
try {
  for (let start = 0; start < N; start += 25) {
    const batch = devices.slice(start, start + 25).map((_, k) => open(start + k, tag))
    conns.push(...(await Promise.all(batch)))
  }
} catch (err) {
  console.error(
    `bench-load: cannot connect to the broker at 127.0.0.1:${PORT}: ${(err as Error).message}`,
  )
  process.exit(1)
}
if (HOLD_S > 0 || o.gated)
  console.log(JSON.stringify({ connected: conns.length, atMs: Date.now() }))
const gate = o.gated ? gateOnStdin() : undefined
let cpuFrom: NodeJS.CpuUsage | undefined
if (gate) {
  await gate.opened
  cpuFrom = process.cpuUsage()
}

// Keepalive 60 promises the broker a packet at least every minute, and slow paced runs may not publish that
// often. It also finds a broker that stopped answering (QoS 1 waiting for PUBACKs that never come): with
// no reply to a PINGREQ for 30 s the connection is given up, so the run ends instead of hanging.
const keepalive = setInterval(() => {
  const now = performance.now()
  for (const c of conns) {
    if (c.state !== 'open') continue
    if (c.pingSent > 0 && now - c.pingSent > PING_MS) giveUp(c, 'no answer to PINGREQ within 30 s')
    else if (c.pingSent === 0 && !c.blocked && now - c.lastWrite > PING_MS) ping(c, now)
  }
}, 5_000).unref()

function ping(c: Conn, now: number): void {
  c.pingSent = c.lastWrite = now
  c.sock.write(PINGREQ)
}

/**
 * --hold: the devices sit idle. The shared 5 s check above would ping them all in the same tick; real
 * devices are not in step, so each gets its own 30 s cycle from a random phase and the broker sees one
 * PINGREQ at a time, as from a fleet. A ping still unanswered when the next is due ends the connection.
 */
async function hold(): Promise<void> {
  clearInterval(keepalive)
  const timers: NodeJS.Timeout[] = []
  for (const c of conns) {
    const cycle = () => {
      if (c.state !== 'open') return
      if (c.pingSent > 0) return giveUp(c, 'no answer to PINGREQ within 30 s')
      ping(c, performance.now())
    }
    const start = () => {
      cycle()
      timers.push(setInterval(cycle, PING_MS))
    }
    timers.push(setTimeout(start, Math.random() * PING_MS))
  }
  await new Promise((r) => setTimeout(r, HOLD_S * 1000))
  for (const t of timers) clearInterval(t)
}

async function paced(): Promise<void> {
  let issued = 0
  const t0 = performance.now()
  while (issued < TOTAL && live > 0) {
    const due = Math.min(TOTAL, Math.floor(((performance.now() - t0) / 1000) * RATE) + 1)
    for (; issued < due; issued++) give(conns[issued % N] as Conn, 1)
    for (const c of conns) pump(c)
    // Every 2 ms, or at a low rate until the next message is due: at 50 msg/s, waking every 2 ms cost this
    // process more CPU than its messages, on the core it shares with paku in the bench's 1-vCPU loads. The
    // extra millisecond: the event loop's clock is in whole milliseconds, so a timer may fire up to one early,
    // find nothing due and wake again.
    const untilNext = t0 + (issued * 1000) / RATE - performance.now()
    await new Promise((r) => setTimeout(r, Math.max(2, Math.ceil(untilNext) + 1)))
  }
  // With no connection left, the messages not yet due cannot be sent either; waiting for them would only
  // stretch the run to its planned length.
  settle(0, TOTAL - issued)
}

if (TOTAL === 0 || N === 0) allDone()
else if (RATE > 0) await paced()
else {
  const base = Math.floor(TOTAL / N)
  const extra = TOTAL % N
  conns.forEach((c, i) => give(c, base + (i < extra ? 1 : 0)))
  for (const c of conns) pump(c)
}
await finished
if (HOLD_S > 0) await hold()
if (lost > 0)
  console.error(
    `bench-load: ${lost} connection(s) dropped before their messages were done (first: ${firstLoss})`,
  )

const sorted = latencies.subarray(0, acked).sort()
const pct = (p: number) =>
  sorted.length === 0
    ? null
    : Math.round(
        (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number) * 10,
      ) / 10
const usage = process.cpuUsage(cpuFrom)
const result = {
  messages: TOTAL,
  sent: stats.sent,
  errors: stats.errors,
  firstPublishMs: stats.firstPublishMs,
  lastDoneMs: stats.lastDoneMs,
  publishRate: Math.round(
    stats.sent / Math.max(0.001, (stats.lastDoneMs - stats.firstPublishMs) / 1000),
  ),
  pubackP50Ms: pct(50),
  pubackP99Ms: pct(99),
  pubackMaxMs: pct(100),
  slowPubacks: RATE > 0 ? slowSpells() : undefined,
  cpuS: Math.round((usage.user + usage.system) / 1e4) / 100,
}
if (gate) {
  console.log(JSON.stringify(result))
  await gate.closed
}
await Promise.race([Promise.all(conns.map(close)), new Promise((r) => setTimeout(r, 5000))])
if (!gate) console.log(JSON.stringify(result))
process.exit(0)

/** --gated: the first line on stdin opens the gate, the end of stdin closes the run (before the gate opened: exits). */
function gateOnStdin(): { opened: Promise<void>; closed: Promise<void> } {
  let open = false
  const opened = new Promise<void>((resolve) =>
    process.stdin.once('data', () => {
      open = true
      resolve()
    }),
  )
  const closed = new Promise<void>((resolve) =>
    process.stdin.once('end', () => (open ? resolve() : process.exit(1))),
  )
  process.stdin.resume()
  return { opened, closed }
}

/**
 * The PUBACKs over SLOW_MS grouped into spells (messages written less than a second apart), the five with
 * the most: one stall of the system shows as one spell of many, a slow drift as many small ones.
 */
function slowSpells(): Array<{ atS: number; n: number; maxMs: number }> {
  const spells: Array<{ atS: number; n: number; maxMs: number; last: number }> = []
  for (const x of slow.sort((a, b) => a.t0 - b.t0)) {
    const cur = spells.at(-1)
    if (cur && x.t0 - cur.last < 1000) {
      cur.n++
      cur.maxMs = Math.max(cur.maxMs, x.ms)
      cur.last = x.t0
    } else spells.push({ atS: (x.t0 - firstPublishPerf) / 1000, n: 1, maxMs: x.ms, last: x.t0 })
  }
  return spells
    .sort((a, b) => b.n - a.n)
    .slice(0, 5)
    .map((s) => ({ atS: Math.round(s.atS * 10) / 10, n: s.n, maxMs: Math.round(s.maxMs) }))
}

/** DISCONNECT, then FIN once everything written before it has gone out. */
function close(c: Conn): Promise<void> {
  if (c.state !== 'open') return Promise.resolve()
  c.state = 'closing'
  return new Promise((resolve) => {
    c.sock.once('close', () => resolve())
    c.sock.end(DISCONNECT)
  })
}

/**
 * The benchmark's load generator (scripts/bench.ts runs it as a child process, so its CPU is its own):
 * N simulated Ruuvi-style devices, one MQTT connection each, publishing to {site}/{system}/{device}/data
 * with the same payload shape as ../shared/bench/loadgen.mjs (per-device `measurement_sequence`, so the
 * harness can tell lost rows from duplicated ones).
 *
 *   node --import tsx scripts/bench-load.ts --port 1883 --devices 100 --messages 50000 --qos 1 [--rate 1000]
 *
 * --rate 0 (default): as fast as the broker takes them, each device keeping up to --inflight publishes
 * outstanding (QoS 0: not yet written to the socket; QoS 1: not yet acknowledged). --rate R: R msg/s in
 * total, round-robin over the devices, no in-flight cap. Prints one JSON object on stdout: sent, errors,
 * first/last publish times (epoch ms) and, for QoS 1, PUBACK latency percentiles.
 */
import mqtt, { type MqttClient } from 'mqtt'
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
  },
})
const N = Number(o.devices)
const TOTAL = Number(o.messages)
const RATE = Number(o.rate)
const QOS = Number(o.qos) as 0 | 1
const INFLIGHT = Math.max(1, Number(o.inflight))

const LOCATIONS = ['cabin', 'cockpit', 'outside', 'fridge', 'bedroom', 'bathroom', 'garage', 'engine']
const hex = (b: number) => b.toString(16).padStart(2, '0').toUpperCase()
const devices = Array.from({ length: N }, (_, i) => {
  const id = `${o.prefix}_${String(i).padStart(4, '0')}`
  return {
    id,
    topic: `${o.site}/sensors/${id}/data`,
    location: LOCATIONS[i % LOCATIONS.length] as string,
    mac: ['C7', hex((i >> 16) & 255), hex((i >> 8) & 255), hex(i & 255), '1A', '2B'].join(':'),
  }
})
const r1 = (lo: number, hi: number) => Math.round((lo + Math.random() * (hi - lo)) * 100) / 100
const ri = (lo: number, hi: number) => Math.floor(lo + Math.random() * (hi - lo + 1))

function payload(d: (typeof devices)[number], seq: number): string {
  return JSON.stringify({
    timestamp: new Date().toISOString(),
    device_id: d.id,
    location: d.location,
    mac: d.mac,
    metrics: {
      temperature_c: r1(-10, 35),
      humidity_percent: r1(20, 90),
      pressure_hpa: r1(960, 1040),
      battery_mv: ri(2400, 3100),
      tx_power_dbm: 4,
      movement_counter: ri(0, 255),
      measurement_sequence: seq,
    },
  })
}

const tag = Math.random().toString(36).slice(2, 8)
const clients: MqttClient[] = []
for (let start = 0; start < N; start += 25) {
  const batch = devices.slice(start, start + 25).map((_, k) =>
    mqtt.connectAsync(`mqtt://127.0.0.1:${o.port}`, {
      clientId: `bench-${tag}-${start + k}`,
      clean: true,
      keepalive: 60,
      reconnectPeriod: 1000,
      // A QoS 0 publish while disconnected is an error, not "sent".
      queueQoSZero: false,
      connectTimeout: 10_000,
    }),
  )
  clients.push(...(await Promise.all(batch)))
}

const stats = { sent: 0, errors: 0, firstPublishMs: 0, lastDoneMs: 0 }
const latencies: number[] = []
const seq = new Uint32Array(N)

function publishOne(i: number, done: () => void): void {
  const d = devices[i] as (typeof devices)[number]
  const body = payload(d, (seq[i] as number))
  seq[i] = (seq[i] as number) + 1
  if (!stats.firstPublishMs) stats.firstPublishMs = Date.now()
  const t0 = performance.now()
  ;(clients[i] as MqttClient).publish(d.topic, body, { qos: QOS }, (err) => {
    if (err) stats.errors++
    else {
      stats.sent++
      if (QOS > 0) latencies.push(performance.now() - t0)
    }
    stats.lastDoneMs = Date.now()
    done()
  })
}

function maxRateDevice(i: number, quota: number): Promise<void> {
  return new Promise((resolve) => {
    let issued = 0
    let inflight = 0
    let pumping = false
    const pump = () => {
      if (pumping) return // a callback fired synchronously inside the loop below
      pumping = true
      while (inflight < INFLIGHT && issued < quota) {
        issued++
        inflight++
        publishOne(i, () => {
          inflight--
          pump()
        })
      }
      pumping = false
      if (issued >= quota && inflight === 0) resolve()
    }
    pump()
  })
}

async function paced(): Promise<void> {
  let outstanding = 0
  let issued = 0
  let allDone = () => {}
  const finished = new Promise<void>((r) => (allDone = r))
  const t0 = performance.now()
  while (issued < TOTAL) {
    const due = Math.min(TOTAL, Math.floor(((performance.now() - t0) / 1000) * RATE) + 1)
    while (issued < due) {
      outstanding++
      publishOne(issued % N, () => {
        if (--outstanding === 0 && issued >= TOTAL) allDone()
      })
      issued++
    }
    await new Promise((r) => setTimeout(r, 2))
  }
  if (outstanding > 0) await finished
}

if (RATE > 0) await paced()
else {
  const base = Math.floor(TOTAL / N)
  const extra = TOTAL % N
  await Promise.all(devices.map((_, i) => maxRateDevice(i, base + (i < extra ? 1 : 0))))
}

latencies.sort((a, b) => a - b)
const pct = (p: number) => (latencies.length === 0 ? null : Math.round((latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] as number) * 10) / 10)
const usage = process.cpuUsage()
const result = {
  messages: TOTAL,
  sent: stats.sent,
  errors: stats.errors,
  firstPublishMs: stats.firstPublishMs,
  lastDoneMs: stats.lastDoneMs,
  publishRate: Math.round(stats.sent / Math.max(0.001, (stats.lastDoneMs - stats.firstPublishMs) / 1000)),
  pubackP50Ms: pct(50),
  pubackP99Ms: pct(99),
  pubackMaxMs: pct(100),
  cpuS: Math.round((usage.user + usage.system) / 1e4) / 100,
}
await Promise.race([Promise.all(clients.map((c) => c.endAsync().catch(() => undefined))), new Promise((r) => setTimeout(r, 5000))])
console.log(JSON.stringify(result))
process.exit(0)

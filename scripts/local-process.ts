/** Shared by the scripts that run paku as a child process on this machine (benchmarks, smoke test). */
import { createServer } from 'node:net'

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** Environment for `paku serve` on loopback ports with the given database and data directory. */
export function serveEnv(o: { databaseUrl: string; dataDir: string; mqttPort: number; httpPort: number }): Record<string, string> {
  return {
    PAKU_DATABASE_URL: o.databaseUrl,
    PAKU_DATA_DIR: o.dataDir,
    PAKU_MQTT_HOST: '127.0.0.1',
    PAKU_MQTT_PORT: String(o.mqttPort),
    PAKU_MQTT_WS_ENABLED: 'false',
    PAKU_HTTP_HOST: '127.0.0.1',
    PAKU_HTTP_PORT: String(o.httpPort),
    PAKU_LOG_FORMAT: 'json',
  }
}

/**
 * `npm test`: type check, lint, then every *.test.ts under src/ with node:test, against one throwaway
 * embedded PostgreSQL cluster (fsync off) started here, or the server in PAKU_TEST_DATABASE_URL.
 * Each integration test file creates its own database on that server (scripts/test-helpers.ts).
 */
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createEmbeddedPostgres } from '../src/db/embedded.js'
import { createLogger } from '../src/log/index.js'
import { freePort } from './local-process.js'

const args = process.argv.slice(2)
const only = args.filter((a) => !a.startsWith('--'))
const skipChecks = args.includes('--no-checks')

function run(cmd: string, argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(cmd, argv, { stdio: 'inherit', env })
    p.on('close', (code) => resolve(code ?? 1))
  })
}

function findTests(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name)
    return e.isDirectory() ? findTests(path) : e.name.endsWith('.test.ts') ? [path] : []
  })
}

if (!skipChecks) {
  console.log('# type check (tsc)')
  if ((await run('npx', ['tsc', '-p', '.'])) !== 0) process.exit(1)
  console.log('# lint (eslint: floating promises)')
  if ((await run('npx', ['eslint', '.'])) !== 0) process.exit(1)
  console.log('# format (prettier --check; npm run format fixes it)')
  if ((await run('npx', ['prettier', '--check', '.', '--log-level', 'warn'])) !== 0) process.exit(1)
}

/** Clusters of earlier runs that were killed before they could stop them (their runner pid is gone). */
function reapStaleClusters(): void {
  if (!existsSync('.paku-test')) return
  for (const name of readdirSync('.paku-test')) {
    const m = /^cluster-(\d+)$/.exec(name)
    if (!m || alive(Number(m[1]))) continue
    const dir = join('.paku-test', name)
    try {
      const pid = Number(
        readFileSync(join(dir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0],
      )
      if (pid > 0 && alive(pid)) process.kill(pid, 'SIGQUIT')
    } catch {
      // no postmaster.pid: nothing running
    }
    rmSync(dir, { recursive: true, force: true })
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

reapStaleClusters()
let url = process.env.PAKU_TEST_DATABASE_URL
let cluster: ReturnType<typeof createEmbeddedPostgres> | undefined
// Interrupted (Ctrl-C, a CI timeout): still stop the cluster, which runs in its own process group.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void (cluster?.stop() ?? Promise.resolve()).finally(() => process.exit(130))
  })
}
if (!url) {
  const port = await freePort()
  cluster = createEmbeddedPostgres({
    dataDir: join('.paku-test', `cluster-${process.pid}`),
    port,
    ephemeral: true,
    log: createLogger({ level: 'warn', format: 'pretty' }),
    // A throwaway cluster: durability off makes the suite faster and changes nothing it asserts.
    settings: {
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      max_connections: '200',
    },
  })
  const t0 = Date.now()
  await cluster.start()
  url = cluster.url()
  console.log(`# embedded postgresql on 127.0.0.1:${port} (${Date.now() - t0} ms)`)
}

const files = [...findTests('src'), ...findTests('build')]
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
let code = 1
try {
  code = await run(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-reporter=spec', ...files],
    {
      ...process.env,
      PAKU_TEST_DATABASE_URL: url,
    },
  )
} finally {
  await cluster?.stop()
}
process.exit(code)

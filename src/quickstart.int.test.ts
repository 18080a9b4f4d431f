/**
 * The quick start works as written: the shell commands of README.md and docs/getting-started.md, run as a
 * newcomer runs them (`npm start`, the emulators, curl, psql, mosquitto_pub), with only the ports and the
 * data directory moved so that the test does not collide with anything else on the machine.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { freePort, logRecords, signalGroup, stopGroup } from '../scripts/local-process.js'
import { defer, eventually } from '../scripts/test-helpers.js'

const ROOT = join(import.meta.dirname, '..')

/** The commands of the shell blocks under the given headings (continuation lines joined, comments dropped). */
export function quickStartCommands(markdown: string, sections: string[]): string[] {
  const out: string[] = []
  let inSection = false
  let block: string[] | undefined
  for (const line of markdown.split('\n')) {
    if (block) {
      if (/^```/.test(line)) {
        out.push(
          ...block
            .join('\n')
            .replace(/\\\n\s*/g, '')
            .split('\n')
            .map(dropComment)
            .filter(Boolean),
        )
        block = undefined
      } else block.push(line)
      continue
    }
    const heading = /^#{1,6}\s+(.*)$/.exec(line)
    if (heading) inSection = sections.includes((heading[1] as string).trim())
    else if (inSection && /^```(sh|bash|console)?\s*$/.test(line) && line !== '```') block = []
  }
  return out
}

/** A trailing `# comment`, when the `#` is outside quotes. */
function dropComment(line: string): string {
  let quote = ''
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string
    if (quote) quote = c === quote ? '' : quote
    else if (c === '"' || c === "'") quote = c
    else if (c === '#' && /\s/.test(line[i - 1] ?? ' ')) return line.slice(0, i).trim()
  }
  return line.trim()
}

const SOURCES: Array<[string, string[]]> = [
  ['README.md', ['Run it', 'A first device in two minutes']],
  ['docs/getting-started.md', ['Run it', 'A first device']],
]

const hasMosquittoPub = spawnSync('sh', ['-c', 'command -v mosquitto_pub']).status === 0
const hasPsql = spawnSync('sh', ['-c', 'command -v psql']).status === 0

describe('the quick start, as written', () => {
  it('finds the commands of a page (positive control)', () => {
    const page =
      '# x\n## Run it\n\n```sh\nnpm ci\nnpm start   # comment\n```\n## Other\n```sh\nnope\n```\n## A first device\n```sh\npsql "x#y" \\\n  -c \'SELECT 1\'  # note\n```\n'
    assert.deepEqual(quickStartCommands(page, ['Run it', 'A first device']), [
      'npm ci',
      'npm start',
      'psql "x#y" -c \'SELECT 1\'',
    ])
  })

  it(
    'from `npm start` to rows in PostgreSQL, /health and the setup link',
    {
      skip: !hasPsql && !process.env.CI && 'no psql (apt-get install postgresql-client)',
      timeout: 180_000,
    },
    async (t) => {
      const commands = [
        ...new Set(
          SOURCES.flatMap(([file, sections]) =>
            quickStartCommands(readFileSync(join(ROOT, file), 'utf8'), sections),
          ),
        ),
      ]
      // What the pages must tell a newcomer to run, at the least.
      for (const want of [
        'npm ci',
        'npm start',
        'npm test',
        'npm run paku -- emulate ruuvi',
        'npm run paku -- emulate heater',
      ]) {
        assert.ok(
          commands.includes(want),
          `the quick start runs \`${want}\`: ${JSON.stringify(commands)}`,
        )
      }
      assert.ok(
        commands.some((c) => c.startsWith('curl ')) && commands.some((c) => c.startsWith('psql ')),
        'the quick start looks at the data',
      )

      const dataDir = mkdtempSync(join(tmpdir(), 'paku-quickstart-'))
      defer(t, () => rmSync(dataDir, { recursive: true, force: true }))
      const port = {
        pg: await freePort(),
        mqtt: await freePort(),
        ws: await freePort(),
        http: await freePort(),
      }
      const env = {
        ...process.env,
        PAKU_DATA_DIR: dataDir,
        PAKU_DATABASE_EMBEDDED_PORT: String(port.pg),
        PAKU_MQTT_PORT: String(port.mqtt),
        PAKU_MQTT_WS_PORT: String(port.ws),
        PAKU_HTTP_PORT: String(port.http),
        PAKU_LOG_FORMAT: 'json',
      }
      // The only changes to the commands: this test's ports and data directory.
      const moved = (c: string) =>
        c
          .replace(/\b(localhost|127\.0\.0\.1):8080\b/g, `127.0.0.1:${port.http}`)
          .replace(/\b127\.0\.0\.1:5433\b/g, `127.0.0.1:${port.pg}`)
          .replace(/(^|[\s(])\.paku\//g, `$1${dataDir}/`)
          .replace(/^mosquitto_pub -h 127\.0\.0\.1 /, `mosquitto_pub -h 127.0.0.1 -p ${port.mqtt} `)
      const background: ChildProcess[] = []
      const started = (c: string) => {
        const child = spawn('bash', ['-c', moved(c)], {
          cwd: ROOT,
          env,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        })
        const lines: string[] = []
        child.stdout.on('data', (b: Buffer) =>
          lines.push(...b.toString().split('\n').filter(Boolean)),
        )
        child.stderr.on('data', (b: Buffer) =>
          lines.push(...b.toString().split('\n').filter(Boolean)),
        )
        background.push(child)
        return {
          child,
          lines,
          exited: new Promise<number | null>((resolve) => child.on('exit', resolve)),
        }
      }
      const run = (c: string) =>
        spawnSync('bash', ['-c', moved(c)], { cwd: ROOT, env, encoding: 'utf8', timeout: 30_000 })
      defer(t, () => background.forEach(stopGroup))

      const server = started('npm start')
      const health = `http://127.0.0.1:${port.http}/health`
      await eventually(
        async () =>
          (await fetch(health).then(
            (r) => r.ok,
            () => false,
          )) || undefined,
        { timeoutMs: 90_000, what: () => `paku answers /health\n${server.lines.join('\n')}` },
      )

      let checked = 0
      for (const c of commands) {
        if (['npm ci', 'npm test', 'npm start'].includes(c) || c.startsWith('PAKU_DATABASE_URL='))
          continue
        if (/ emulate /.test(c)) {
          started(c)
        } else if (c.startsWith('curl ')) {
          const out = await eventually(
            async () => {
              const r = run(c)
              const h = JSON.parse(r.stdout || '{}') as { ingest?: { written?: number } }
              return (h.ingest?.written ?? 0) > 0 ? h : undefined
            },
            { timeoutMs: 30_000, what: `${c}: rows written` },
          )
          assert.ok((out.ingest?.written ?? 0) > 0)
          checked++
        } else if (c.startsWith('psql ')) {
          // Both emulators' devices are among the newest rows.
          await eventually(
            async () => {
              const r = run(c)
              return (
                (r.status === 0 &&
                  /ruuvi_(van_inside|cabin)/.test(r.stdout) &&
                  r.stdout.includes('emu01')) ||
                undefined
              )
            },
            {
              timeoutMs: 30_000,
              what: () => `${c}: rows of both emulators\n${run(c).stdout}${run(c).stderr}`,
            },
          )
          checked++
        } else if (c.startsWith('mosquitto_pub ')) {
          if (!hasMosquittoPub && !process.env.CI) continue
          const r = run(c)
          assert.equal(r.status, 0, r.stderr)
          const device = /\/([^/]+)\/data\b/.exec(c)?.[1] as string
          const psql = commands.find((x) => x.startsWith('psql ')) as string
          const query = moved(psql).replace(
            /-c '.*'$/,
            `-tA -c "SELECT count(*) FROM measurements WHERE device_id = '${device}'"`,
          )
          await eventually(
            async () =>
              spawnSync('bash', ['-c', query], { env, encoding: 'utf8' }).stdout.trim() === '1' ||
              undefined,
            { what: `${c}: its row` },
          )
          checked++
        } else {
          assert.fail(`a quick-start command this test does not know how to check: ${c}`)
        }
      }
      assert.ok(checked >= 2, 'positive control: commands were run and checked')

      // The setup link the README tells a newcomer to open: logged once, and its page is there.
      const link = logRecords(server.lines).find((l) =>
        String(l.msg).startsWith('no admin key yet: open this link'),
      )
      assert.match(
        String(link?.url),
        new RegExp(`^http://127\\.0\\.0\\.1:${port.http}/ui/#setup=[\\w-]{40,}$`),
      )
      const page = await fetch(String(link?.url))
      assert.equal(page.status, 200)
      assert.match(await page.text(), /<html/i)

      // Ctrl-C: paku stops, and with it the PostgreSQL it started.
      for (const b of background.slice(1)) signalGroup(b, 'SIGINT')
      signalGroup(server.child, 'SIGINT')
      await eventually(
        async () => !existsSync(join(dataDir, 'postgres', 'postmaster.pid')) || undefined,
        { timeoutMs: 30_000, what: 'postgres stopped with paku' },
      )
    },
  )
})

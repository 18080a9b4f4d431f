import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { ENV_TABLE } from './env.js'
import {
  derivePublicUrl,
  ecoflowRegion,
  importEnv,
  NOT_CARRIED,
  parseComposeEnv,
  producedEnv,
  quoteEnvValue,
  renderEnvFile,
} from './import-env.js'
import { loadConfig } from './load.js'

/**
 * A compose/.env as the old deploy workflow wrote it, plus what .env.example added, edited by hand:
 * quotes, comments, an `export` (docs/compatibility.md, "Configuration").
 */
const OLD_ENV = `# compose/.env, written by the deploy workflow (chmod 600)
POSTGRES_USER=paku
POSTGRES_PASSWORD="Pg-S3cret/with spaces&more#1"
POSTGRES_DB=paku
MQTT_HOST=mosquitto
MQTT_PORT=1883
MQTT_USER=edge
MQTT_PASSWORD='mqtt-$hared-S3cret'   # compiled into every device
MQTT_CN=paku-mqtt
GF_SECURITY_ADMIN_USER=admin
GF_SECURITY_ADMIN_PASSWORD=Grafana-Admin-S3cret
PAKU_DOMAIN=iot.example.com
ECOFLOW_ACCESS_KEY=Ak0123456789abcdefEXAMPLE
ECOFLOW_SECRET_KEY="Sk0123456789abcdefEXAMPLE"
ECOFLOW_DEVICE_SN=R331ZEB4ZEA00123
ECOFLOW_API_URL=
OTA_API_KEY=ota-0123456789abcdef0123456789abcdef

# from .env.example
MQTT_TOPIC_PATTERN=+/+/+/data
export REST_API_INTERVAL=60
MAX_RUNTIME_SECONDS=300
HEATER_DEVICE_ID=emu01
HEATER_PUBLISH_INTERVAL=5
HETZNER_HOST=paku.example.net
HETZNER_USER=paku
HETZNER_SSH_PUB_KEY_PATH=~/.ssh/id_ed25519.pub
HETZNER_SSH_PRIV_KEY_PATH=~/.ssh/id_ed25519
HETZNER_PAKU_DIR=/home/paku/paku-iot
COLLECTOR_MQTT_TOPIC=paku/+/+/data
COLLECTOR_DB_HOST=postgres
COLLECTOR_DB_PORT=5432
EMULATOR_MQTT_TOPIC=paku/ruuvi/van_inside
EMULATOR_PUBLISH_INTERVAL=5
`

const SECRETS = [
  'Pg-S3cret',
  'mqtt-$hared-S3cret',
  'ota-0123456789abcdef',
  'Ak0123456789abcdef',
  'Sk0123456789abcdef',
  'Grafana-Admin-S3cret',
]

/** What `set -a; . FILE` in a POSIX shell makes of the given variables. */
function sourceWithSh(text: string, names: string[]): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'paku-import-env-'))
  try {
    writeFileSync(join(dir, 'paku.env'), text)
    const script = `set -a; . "$1"; printf '%s\\0' ${names.map((n) => `"$${n}"`).join(' ')}`
    const out = execFileSync('sh', ['-c', script, 'sh', join(dir, 'paku.env')], {
      encoding: 'utf8',
      env: {},
    })
    const values = out.split('\0')
    return Object.fromEntries(names.map((n, i) => [n, values[i] as string]))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

describe('parseComposeEnv reads .env files as Docker Compose does', () => {
  const cases: Array<{
    name: string
    text: string
    want: Record<string, string>
    problems?: Array<[number, RegExp, boolean]>
  }> = [
    {
      name: 'plain, blanks around =, export prefix, yaml style, empty values',
      text: 'A=1\n  B = two  \nexport C=3\nD: 4\nexportE=5\nF=\nG=""\nH=a=b:c',
      want: { A: '1', B: 'two', C: '3', D: '4', exportE: '5', F: '', G: '', H: 'a=b:c' },
    },
    {
      name: 'an inline comment needs a blank before its #',
      text: 'A=x # c\nB=x#y\nC= #z\nD="q # r" # c\nE=\'s#t\'#c\n# F=commented out\n   # indented comment',
      want: { A: 'x', B: 'x#y', C: '#z', D: 'q # r', E: 's#t' },
    },
    {
      name: 'single quotes are literal, except an escaped quote',
      text: "X=1\nA='$X ${X} \\n $$'\nB='it\\'s'",
      want: { X: '1', A: '$X ${X} \\n $$', B: "it's" },
    },
    {
      name: 'double quotes take escapes and interpolate',
      text: 'U=paku\nA="a\\tb\\n\\"q\\" \\\\ \\$U $U ${U}"',
      want: { U: 'paku', A: 'a\tb\n"q" \\ $U paku paku' },
    },
    {
      name: 'unquoted values interpolate too, without escapes',
      text: 'U=paku\nA=$U-${U}\\t',
      want: { U: 'paku', A: 'paku-paku\\t' },
    },
    {
      name: 'defaults and alternatives, nested',
      text: 'E=\nS=s\nA=${E:-d}\nB=${E-d}\nC=${N:-x${S}}\nD=${S:+alt}\nF=${N+alt}\nG=${E+alt}',
      want: { E: '', S: 's', A: 'd', B: '', C: 'xs', D: 'alt', F: '', G: 'alt' },
    },
    {
      name: '$$ is a literal $, and a $ that starts no name stays',
      text: 'A=pa$$word\nB=5$\nC=$1x\nD="x$$y"',
      want: { A: 'pa$word', B: '5$', C: '$1x', D: 'x$y' },
    },
    {
      name: 'only variables set earlier in the file are looked up; others read as empty, with a note',
      text: 'A=$B\nB=2\nC=${HOME}',
      want: { A: '', B: '2', C: '' },
      problems: [
        [1, /\$B is not set earlier in the file/, false],
        [
          3,
          /\$HOME is not set earlier in the file \(compose would take it from the shell environment\)/,
          false,
        ],
      ],
    },
    {
      name: 'a key set twice keeps the last value, with a note',
      text: 'A=1\nB=x\nA=2',
      want: { A: '2', B: 'x' },
      problems: [
        [3, /^A is set again \(first on line 1\); the last one counts, as in compose$/, false],
      ],
    },
    {
      name: 'a double-quoted value may span lines; later line numbers stay right',
      text: 'A="l1\nl2"\nB=x\nnot a line',
      want: { A: 'l1\nl2', B: 'x' },
      problems: [[4, /^not KEY=VALUE; skipped$/, true]],
    },
    {
      name: 'bad lines are skipped with their number and the rest is read',
      text: 'A=1\nthis is not\nB\n"C"=1\nF=${G\nH="x" y\nD="open\nE=5',
      want: { A: '1', F: '${G', H: 'x', E: '5' },
      problems: [
        [2, /^not KEY=VALUE; skipped$/, true],
        [3, /^B has no value \(compose takes it from the shell environment\); not imported$/, true],
        [4, /^not KEY=VALUE; skipped$/, true],
        [5, /invalid interpolation "\$\{G" kept as it is/, false],
        [6, /^text after the closing quote ignored$/, false],
        [7, /^unterminated double quote; skipped$/, true],
      ],
    },
    {
      name: 'CRLF line ends and a byte order mark',
      text: '\uFEFFA=1\r\nB="2"\r\nC=3 # c\r\n',
      want: { A: '1', B: '2', C: '3' },
    },
  ]
  for (const c of cases) {
    it(c.name, () => {
      const r = parseComposeEnv(c.text)
      assert.deepEqual(Object.fromEntries([...r.vars].map(([k, v]) => [k, v.value])), c.want)
      const want = c.problems ?? []
      assert.equal(r.problems.length, want.length, JSON.stringify(r.problems))
      want.forEach(([line, message, skipped], i) => {
        const p = r.problems[i]
        assert.ok(
          p && p.line === line && message.test(p.message) && p.skipped === skipped,
          `${JSON.stringify(p)} vs line ${line} ${message}`,
        )
      })
    })
  }

  it('records the line each variable was last set on', () => {
    const r = parseComposeEnv('# c\nA=1\n\nB="x\ny"\nC=3\nA=4')
    assert.deepEqual(Object.fromEntries([...r.vars].map(([k, v]) => [k, v.line])), {
      A: 7,
      B: 4,
      C: 6,
    })
  })
})

describe('importEnv maps the old stack to paku', () => {
  const r = importEnv(OLD_ENV)
  const env = producedEnv(r)

  it('produces the equivalent paku variables', () => {
    assert.deepEqual(env, {
      PAKU_DATABASE_URL: 'postgres://paku:Pg-S3cret%2Fwith%20spaces%26more%231@127.0.0.1:5432/paku',
      PAKU_MQTT_USERNAME: 'edge',
      PAKU_MQTT_PASSWORD: 'mqtt-$hared-S3cret',
      PAKU_OTA_API_KEY: 'ota-0123456789abcdef0123456789abcdef',
      PAKU_PUBLIC_URL: 'https://iot.example.com/ota',
      PAKU_ECOFLOW_ACCESS_KEY: 'Ak0123456789abcdefEXAMPLE',
      PAKU_ECOFLOW_SECRET_KEY: 'Sk0123456789abcdefEXAMPLE',
      PAKU_ECOFLOW_DEVICES: 'R331ZEB4ZEA00123',
      PAKU_ECOFLOW_API_URL: 'eu',
      PAKU_ECOFLOW_POLL_SECONDS: '60',
    })
    assert.deepEqual(r.problems, [])
    assert.deepEqual(r.warnings, [])
    assert.deepEqual(r.unknown, [])
  })

  it("passes paku's own config validation, and the database URL decodes to the old password", () => {
    const loaded = loadConfig({ env })
    assert.ok(loaded.ok, JSON.stringify(loaded))
    assert.deepEqual(r.configIssues, [])
    assert.equal(loaded.config.mqtt.sharedCredential.password, 'mqtt-$hared-S3cret')
    assert.equal(
      decodeURIComponent(new URL(loaded.config.database.url).password),
      'Pg-S3cret/with spaces&more#1',
    )
    assert.equal(loaded.config.ecoflow.pollSeconds, 60)
  })

  it('every variable it produces, or names in the file, is in ENV_TABLE', () => {
    const known = new Set(ENV_TABLE.map((e) => e.name))
    for (const name of Object.keys(env)) assert.ok(known.has(name), name)
    const text = renderEnvFile(r, { source: 'compose/.env', showSecrets: true })
    // PAKU_DOMAIN is the old stack's own variable, named in a comment.
    for (const name of new Set(text.match(/\bPAKU_[A-Z0-9_]+/g)))
      assert.ok(known.has(name) || name === 'PAKU_DOMAIN', name)
  })

  it('lists what it does not carry over, with a reason, by name only', () => {
    const listed = r.notCarried.flatMap((x) => x.names)
    assert.deepEqual(listed.sort(), [
      'COLLECTOR_DB_HOST',
      'COLLECTOR_DB_PORT',
      'COLLECTOR_MQTT_TOPIC',
      'EMULATOR_MQTT_TOPIC',
      'EMULATOR_PUBLISH_INTERVAL',
      'GF_SECURITY_ADMIN_PASSWORD',
      'GF_SECURITY_ADMIN_USER',
      'HEATER_DEVICE_ID',
      'HEATER_PUBLISH_INTERVAL',
      'HETZNER_HOST',
      'HETZNER_PAKU_DIR',
      'HETZNER_SSH_PRIV_KEY_PATH',
      'HETZNER_SSH_PUB_KEY_PATH',
      'HETZNER_USER',
      'MAX_RUNTIME_SECONDS',
      'MQTT_HOST',
      'MQTT_PORT',
      'MQTT_TOPIC_PATTERN',
    ])
    const text = renderEnvFile(r, { source: 'compose/.env', showSecrets: true })
    assert.match(
      text,
      /^# GF_SECURITY_ADMIN_USER, GF_SECURITY_ADMIN_PASSWORD: Grafana's own, not paku's: keep them for Grafana/m,
    )
    assert.doesNotMatch(text, /Grafana-Admin-S3cret|paku\.example\.net/)
  })

  it('masks every secret unless asked, and names the old variable above each new one', () => {
    const masked = renderEnvFile(r, { source: 'compose/.env', showSecrets: false })
    for (const s of [...SECRETS, encodeURIComponent('Pg-S3cret')]) assert.ok(!masked.includes(s), s)
    assert.match(masked, /^PAKU_DATABASE_URL=postgres:\/\/paku:\*\*\*@127\.0\.0\.1:5432\/paku$/m)
    for (const name of [
      'PAKU_MQTT_PASSWORD',
      'PAKU_OTA_API_KEY',
      'PAKU_ECOFLOW_ACCESS_KEY',
      'PAKU_ECOFLOW_SECRET_KEY',
    ]) {
      assert.match(masked, new RegExp(`^${name}=\\*\\*\\*$`, 'm'))
    }
    assert.match(masked, /^PAKU_MQTT_USERNAME=edge$/m)
    assert.match(
      masked,
      /Docker service name; on the new VM PostgreSQL is\n# usually on 127\.0\.0\.1/,
    )
    assert.match(
      masked,
      /# From ECOFLOW_DEVICE_SN: the one device the old collector polled\.\nPAKU_ECOFLOW_DEVICES=R331ZEB4ZEA00123/,
    )
    assert.match(
      masked,
      /^# PAKU_OTA_FIRMWARE_DIR=\/var\/lib\/docker\/volumes\/paku_firmware\/_data$/m,
    )
    const shown = renderEnvFile(r, { source: 'compose/.env', showSecrets: true })
    for (const s of SECRETS.filter((s) => !s.startsWith('Grafana') && !s.startsWith('Pg')))
      assert.ok(shown.includes(s), s)
  })

  it('writes a file a shell reads back to exactly the produced values', () => {
    const text = renderEnvFile(r, { source: 'compose/.env', showSecrets: true })
    assert.deepEqual(sourceWithSh(text, Object.keys(env)), env)
  })
})

describe('importEnv: one old setting at a time', () => {
  const base =
    'POSTGRES_PASSWORD=pw\nMQTT_USER=edge\nMQTT_PASSWORD=mq\nPAKU_DOMAIN=iot.example.com\n'
  const cases: Array<{
    name: string
    text: string
    want?: Record<string, string | undefined>
    warning?: RegExp
    issues?: string[]
    comment?: RegExp
  }> = [
    {
      name: 'a short admin key is kept, warned about, and is the one issue paku would refuse',
      text: base + 'OTA_API_KEY=tooshort',
      want: { PAKU_OTA_API_KEY: 'tooshort' },
      warning:
        /^OTA_API_KEY is 8 characters; paku needs at least 32 .* `openssl rand -hex 32` here and into the CI workflow's OTA_API_KEY secret$/,
      issues: [
        'http.adminApiKey (from PAKU_OTA_API_KEY): http.adminApiKey must be at least 32 characters (e.g. openssl rand -hex 32)',
      ],
    },
    {
      name: "the OTA service's own API_KEY counts too",
      text: base + `API_KEY=${'k'.repeat(32)}`,
      want: { PAKU_OTA_API_KEY: 'k'.repeat(32) },
    },
    {
      name: 'an empty admin key leaves the admin API off',
      text: base + 'OTA_API_KEY=',
      want: { PAKU_OTA_API_KEY: undefined },
      comment: /OTA_API_KEY is empty: the admin API stays off/,
    },
    {
      name: 'PAKU_DOMAIN :80 gives no public URL',
      text: 'PAKU_DOMAIN=:80',
      want: { PAKU_PUBLIC_URL: undefined },
      warning:
        /^PAKU_DOMAIN is ":80" \(Caddy on plain HTTP, no domain\): PAKU_PUBLIC_URL cannot be derived/,
    },
    {
      name: 'no PAKU_DOMAIN is the old default :80',
      text: 'MQTT_USER=edge',
      want: { PAKU_PUBLIC_URL: undefined },
      warning: /^PAKU_DOMAIN is not set \(the old default :80, no domain\)/,
    },
    {
      name: 'a PAKU_DOMAIN with a scheme keeps it',
      text: 'PAKU_DOMAIN=http://10.0.0.5:8000/',
      want: { PAKU_PUBLIC_URL: 'http://10.0.0.5:8000/ota' },
    },
    {
      name: 'the database elsewhere keeps its host and port; a missing user and database are paku',
      text: 'POSTGRES_PASSWORD=pw\nPGHOST=db.internal\nPGPORT=6432',
      want: { PAKU_DATABASE_URL: 'postgres://paku:pw@db.internal:6432/paku' },
      comment: /An unset user or database name is paku/,
    },
    {
      name: 'no POSTGRES_* means no database URL (embedded PostgreSQL)',
      text: 'MQTT_USER=edge',
      want: { PAKU_DATABASE_URL: undefined },
      comment: /paku runs its embedded PostgreSQL/,
    },
    {
      name: 'a missing database password is warned about',
      text: 'POSTGRES_USER=iot\nPOSTGRES_DB=iot',
      want: { PAKU_DATABASE_URL: 'postgres://iot@127.0.0.1:5432/iot' },
      warning: /^POSTGRES_PASSWORD is empty or missing/,
    },
    {
      name: 'a missing MQTT password is warned about',
      text: 'MQTT_USER=edge',
      want: { PAKU_MQTT_USERNAME: 'edge', PAKU_MQTT_PASSWORD: undefined },
      warning: /^MQTT_PASSWORD is empty or missing/,
    },
    {
      name: "a missing MQTT user is the old broker's edge",
      text: 'MQTT_PASSWORD=mq',
      want: { PAKU_MQTT_USERNAME: 'edge', PAKU_MQTT_PASSWORD: 'mq' },
    },
    {
      name: 'an empty EcoFlow serial number means every device in paku, warned about',
      text: base + 'ECOFLOW_ACCESS_KEY=ak\nECOFLOW_SECRET_KEY=sk\nECOFLOW_DEVICE_SN=',
      want: { PAKU_ECOFLOW_ACCESS_KEY: 'ak', PAKU_ECOFLOW_DEVICES: undefined },
      warning:
        /^ECOFLOW_DEVICE_SN is empty: the old collector polled only that serial number .* polls every device of the account/,
    },
    {
      name: 'EcoFlow without keys stays off, nothing carried over',
      text:
        base +
        'ECOFLOW_ACCESS_KEY=\nECOFLOW_SECRET_KEY=\nECOFLOW_DEVICE_SN=R331\nREST_API_INTERVAL=30',
      want: {
        PAKU_ECOFLOW_ACCESS_KEY: undefined,
        PAKU_ECOFLOW_DEVICES: undefined,
        PAKU_ECOFLOW_POLL_SECONDS: undefined,
      },
      comment: /without both keys EcoFlow stays off/,
    },
    {
      name: 'EcoFlow with one key is warned about',
      text: base + 'ECOFLOW_ACCESS_KEY=ak',
      want: { PAKU_ECOFLOW_ACCESS_KEY: undefined },
      warning: /^only ECOFLOW_ACCESS_KEY is set: paku needs both/,
    },
    {
      name: 'the US host is paku us; a poll interval paku refuses is reported',
      text:
        base +
        'ECOFLOW_ACCESS_KEY=ak\nECOFLOW_SECRET_KEY=sk\nECOFLOW_DEVICE_SN=R331\nECOFLOW_API_URL=https://api-a.ecoflow.com/\nREST_API_INTERVAL=2',
      want: { PAKU_ECOFLOW_API_URL: 'us', PAKU_ECOFLOW_POLL_SECONDS: '2' },
      issues: [
        'ecoflow.pollSeconds (from PAKU_ECOFLOW_POLL_SECONDS): pollSeconds must be at least 5',
      ],
    },
    {
      name: 'a paku variable already in the old file wins over the derived one',
      text: base + 'PAKU_DATABASE_URL=postgres://a:b@db/c',
      want: { PAKU_DATABASE_URL: 'postgres://a:b@db/c' },
      comment: /PAKU_DATABASE_URL is set in the old file itself: that value is used/,
    },
    { name: 'unknown variables are listed by name', text: base + 'SOMETHING_ELSE=1' },
  ]
  for (const c of cases) {
    it(c.name, () => {
      const r = importEnv(c.text)
      const env = producedEnv(r)
      for (const [k, v] of Object.entries(c.want ?? {})) assert.equal(env[k], v, k)
      if (c.warning)
        assert.ok(
          r.warnings.some((w) => c.warning?.test(w)),
          JSON.stringify(r.warnings),
        )
      assert.deepEqual(r.configIssues, c.issues ?? [])
      const text = renderEnvFile(r, { source: 'old.env', showSecrets: true })
      if (c.comment) assert.match(text, c.comment)
      if (c.name.startsWith('unknown')) {
        assert.deepEqual(r.unknown, ['SOMETHING_ELSE'])
        assert.match(
          text,
          /^# Not used by paku \(nor documented by the old stack\): SOMETHING_ELSE\.$/m,
        )
      }
      assert.deepEqual(sourceWithSh(text, Object.keys(env)), env)
    })
  }

  it('has a reason for every variable of the old stack it does not carry over', () => {
    for (const x of NOT_CARRIED) assert.ok(x.names.length > 0 && x.reason.length > 10)
    const everything = NOT_CARRIED.flatMap((x) => x.names)
      .map((n) => `${n}=x`)
      .join('\n')
    assert.deepEqual(importEnv(everything).unknown, [])
  })
})

describe('import-env helpers', () => {
  const urls: Array<[string, string | undefined]> = [
    ['iot.example.com', 'https://iot.example.com/ota'],
    ['iot.example.com:8443', 'https://iot.example.com:8443/ota'],
    ['https://iot.example.com', 'https://iot.example.com/ota'],
    [':80', undefined],
    [':443', undefined],
    ['', undefined],
    ['a.example.com, b.example.com', undefined],
    ['*.example.com', undefined],
  ]
  for (const [domain, want] of urls)
    it(`PAKU_DOMAIN ${JSON.stringify(domain)} → ${want ?? 'none'}`, () =>
      assert.equal(derivePublicUrl(domain), want))

  const regions: Array<[string, string]> = [
    ['', 'eu'],
    ['https://api-e.ecoflow.com', 'eu'],
    ['https://API-A.ecoflow.com/', 'us'],
    ['https://api.ecoflow.com', 'global'],
    ['http://127.0.0.1:9000', 'http://127.0.0.1:9000'],
  ]
  for (const [url, want] of regions)
    it(`ECOFLOW_API_URL ${JSON.stringify(url)} → ${want}`, () =>
      assert.equal(ecoflowRegion(url), want))

  it('quotes values so that a shell reads them back unchanged', () => {
    const values = [
      'plain',
      'a=b+c/d:e,f@g%h',
      '',
      'two words',
      "it's",
      'd$llar `tick` "q" \\back',
      '$HOME',
      'multi\nline',
      "both ' and $x",
      '~/x',
      '#x',
      ' lead',
    ]
    const text = values.map((v, i) => `V${i}=${quoteEnvValue(v)}`).join('\n') + '\n'
    const got = sourceWithSh(
      text,
      values.map((_, i) => `V${i}`),
    )
    assert.deepEqual(Object.values(got), values)
    assert.equal(quoteEnvValue('postgres://u:p%20w@h:5432/db'), 'postgres://u:p%20w@h:5432/db')
  })
})

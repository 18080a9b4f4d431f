/**
 * `paku --help` and `paku <command> --help`: what each command does, its options, an example, and the
 * page of docs/ that covers the task. docs/cli.md holds the same texts (a test compares them).
 */

export type CommandHelp = {
  /** One line for the overview. */
  summary: string
  usage: string
  /** What it does, a few lines. */
  about: string
  options?: ReadonlyArray<readonly [string, string]>
  example: string
  /** Where the task is documented, relative to the repository root. */
  docs: string
}

const CONFIG_OPTION = [
  '--config FILE',
  'the config file (else $PAKU_CONFIG, else ./paku.config.json); PAKU_* variables override it',
] as const

export const COMMANDS: Readonly<Record<string, CommandHelp>> = {
  serve: {
    summary: 'run the broker, ingest, OTA, EcoFlow and the HTTP API (the default)',
    usage: 'paku [serve] [--config FILE]',
    about:
      'Starts everything in one process: the MQTT listeners, the batch writer to PostgreSQL (an embedded one\n' +
      'when no database URL is set), the HTTP API and console. Ctrl-C or SIGTERM stops it cleanly: the last\n' +
      'batch is written first. SIGHUP reloads the TLS certificates.',
    options: [CONFIG_OPTION],
    example: 'PAKU_DATABASE_URL=postgres://paku:secret@127.0.0.1:5432/paku paku serve',
    docs: 'docs/getting-started.md',
  },
  migrate: {
    summary: "apply pending SQL migrations (and build the big tables' indexes), then exit",
    usage: 'paku migrate [--config FILE]',
    about:
      'Applies the migrations paku has not applied yet, adds what an adopted database lacks, and builds the\n' +
      'indexes of the big tables concurrently, waiting for them (paku serve builds them in the background).',
    options: [CONFIG_OPTION],
    example: 'paku migrate --config /etc/paku/paku.config.json',
    docs: 'docs/operations.md#upgrades',
  },
  'check-config': {
    summary: 'validate the config and print it with secrets masked',
    usage: 'paku check-config [--config FILE]',
    about:
      'Reads the config file and the PAKU_* variables as serve would, and prints the result (secrets as ***)\nor every problem with its key.',
    options: [CONFIG_OPTION],
    example: 'PAKU_MQTT_PORT=1884 paku check-config',
    docs: 'docs/configuration.md',
  },
  emulate: {
    summary: 'publish realistic device data: emulate ruuvi|heater',
    usage:
      'paku emulate ruuvi|heater [--url URL] [--site NAME] [--device IDS] [--interval SEC] [--count N] [--legacy]',
    about:
      'Publishes what Ruuvi tags (through an edge device) or the hydronic heater send, to try paku or a dashboard.',
    options: [
      [
        '--url URL',
        'broker: mqtt://, mqtts://, ws:// or wss://host:port[/path], user:password@ allowed (default mqtt://127.0.0.1:<mqtt.port>)',
      ],
      ['--site NAME', 'site id, the first topic level (default paku)'],
      [
        '--device IDS',
        'heater id (default emu01) or comma-separated Ruuvi locations (default van_inside,cabin)',
      ],
      ['--legacy', 'ruuvi: also publish the old flat payload on {site}/ruuvi/{location}'],
      ['--interval SEC', 'seconds between rounds (default 5)'],
      ['--count N', 'rounds to publish, 0 = until Ctrl-C (default 0)'],
      ['--username U --password P', 'credentials (override those in --url)'],
    ],
    example: 'paku emulate ruuvi --device cabin,outside --interval 2 --count 10',
    docs: 'docs/getting-started.md',
  },
  device: {
    summary: 'MQTT credentials: device add|list|remove',
    usage:
      'paku device add ID [--password P] [--role device|bridge|service] | device list | device remove ID',
    about:
      'Adds, lists or removes a login for the broker. A device login may only use its own id as client id and\n' +
      "reach its own topics; a bridge (Home Assistant's Mosquitto) and a service (CI) have wider rights.\n" +
      'Without --password a random one is generated and printed once.',
    options: [
      ['--password P', 'the password (else generated)'],
      ['--role R', 'device (default), bridge or service'],
      CONFIG_OPTION,
    ],
    example: 'paku device add ESP32-1A2B3C4D',
    docs: 'docs/devices.md#logins-and-rights',
  },
  key: {
    summary: 'admin API keys: key create|list|revoke',
    usage:
      'paku key create NAME --scopes read,upload,rollout,ingest,command,admin | key list | key revoke NAME',
    about:
      'Creates a named key with the scopes it needs (printed once), lists keys (never their secrets) or revokes one.',
    options: [
      ['--scopes LIST', 'comma-separated: read, upload, rollout, ingest, command, admin'],
      CONFIG_OPTION,
    ],
    example: 'paku key create firmware-ci --scopes read,upload,rollout',
    docs: 'docs/http-api.md#keys-and-scopes',
  },
  firmware: {
    summary: "firmware import DIR: load the old OTA service's firmware volume into the database",
    usage: 'paku firmware import DIR [--config FILE]',
    about:
      'Reads {model}_{version}.bin files for the releases the database knows, each checked against its recorded\nSHA-256 (ota.firmwareDir does the same at every start).',
    options: [CONFIG_OPTION],
    example: 'paku firmware import /var/lib/docker/volumes/paku_firmware/_data',
    docs: 'docs/migrating-from-paku-iot.md',
  },
  'import-env': {
    summary: "the old stack's compose/.env as PAKU_* variables",
    usage: 'paku import-env OLD_ENV_FILE [--write FILE [--force]] [--show-secrets]',
    about:
      'Reads the old Docker Compose .env as compose does and prints the equivalent paku variables, secrets\n' +
      'as *** unless --show-secrets; --write puts the real values into FILE (mode 0600). Exits 1 when a line\n' +
      'was skipped or paku would refuse the result.',
    options: [
      ['--write FILE', 'write the result to FILE (mode 0600; an existing file only with --force)'],
      ['--force', 'replace FILE'],
      ['--show-secrets', 'print the secrets instead of ***'],
    ],
    example: 'paku import-env compose/.env --write /etc/paku/paku.env --force',
    docs: 'docs/migrating-from-paku-iot.md',
  },
  'install-service': {
    summary: 'systemd: install the executable, user, unit and config',
    usage: 'paku install-service [--bin PATH] [--user NAME] [--root DIR] [--dry-run]',
    about:
      'Copies this executable to /usr/local/bin, creates the paku user, writes the hardened systemd unit, the\nconfig and an env file for secrets; --dry-run prints what it would do.',
    options: [
      ['--bin PATH', 'where to install the executable (default /usr/local/bin/paku)'],
      ['--user NAME', 'the service user (default paku)'],
      ['--root DIR', 'install under DIR instead of / (packaging, tests)'],
      ['--dry-run', 'print, change nothing'],
    ],
    example: 'sudo ./paku install-service --dry-run',
    docs: 'docs/operations.md#install-on-a-vm',
  },
  'wait-ready': {
    summary: "wait until paku's /health answers ok (deploy scripts)",
    usage: 'paku wait-ready [--timeout SEC] [--config FILE]',
    about:
      "Polls the configured HTTP listener's /health until it is ok, or fails after the timeout.",
    options: [['--timeout SEC', 'give up after SEC seconds (default 60)'], CONFIG_OPTION],
    example: 'systemctl restart paku && paku wait-ready --timeout 120',
    docs: 'docs/operations.md#upgrades',
  },
  grafana: {
    summary: 'grafana export DIR: write the Grafana provisioning files',
    usage: 'paku grafana export DIR [--no-legacy]',
    about:
      "Writes the datasource and dashboards paku ships to DIR (Grafana's provisioning directory).",
    options: [['--no-legacy', 'leave out (and remove) the "EcoFlow — Legacy" folder']],
    example: 'sudo paku grafana export /etc/grafana/provisioning',
    docs: 'docs/grafana.md',
  },
  version: {
    summary: 'print version and commit',
    usage: 'paku version',
    about: 'Prints the version, the commit it was built from and the Node.js version inside.',
    example: 'paku version',
    docs: 'docs/operations.md#upgrades',
  },
}

/** The overview: every command in one line each. */
export function overview(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length))
  const lines = Object.entries(COMMANDS).map(([name, h]) => `  ${name.padEnd(width)}  ${h.summary}`)
  return [
    'paku — MQTT broker + PostgreSQL ingest + OTA + EcoFlow in one process',
    '',
    'usage: paku <command> [options]      paku <command> --help for its options and an example',
    ...lines,
    '',
    'docs: README.md and docs/ (docs/cli.md: every command)',
  ].join('\n')
}

/** One command's help. */
export function commandHelp(name: string): string | undefined {
  const h = COMMANDS[name]
  if (!h) return undefined
  const width = Math.max(0, ...(h.options ?? []).map(([o]) => o.length))
  return [
    `usage: ${h.usage}`,
    '',
    h.about,
    ...(h.options && h.options.length > 0
      ? ['', 'options:', ...h.options.map(([o, d]) => `  ${o.padEnd(width)}  ${d}`)]
      : []),
    '',
    'example:',
    `  ${h.example}`,
    '',
    `docs: ${h.docs}`,
  ].join('\n')
}

/** docs/cli.md: every command's help text under its heading (`npm run cli-docs` writes it). */
export function cliPage(): string {
  const parts = [
    '# The paku command',
    '',
    'One executable, several commands. `paku --help` lists them, `paku <command> --help` (or `paku help',
    '<command>`) prints the text below. Every command reads the configuration the same way: `--config FILE`,',
    'else `$PAKU_CONFIG`, else `./paku.config.json`, then the `PAKU_*` variables on top',
    '([Configuration](configuration.md)). From a checkout, `npm run paku -- <command>` runs the same.',
    '',
  ]
  for (const name of Object.keys(COMMANDS))
    parts.push(`## ${name}`, '', '```text', commandHelp(name) as string, '```', '')
  return parts.join('\n')
}

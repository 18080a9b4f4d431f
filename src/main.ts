#!/usr/bin/env node
import { runCli } from './cli/index.js'

// Process glue only: argv, signals, exit code. Everything else lives in cli/ and app.ts.
let stopRequested = false
const waitForStop = () =>
  new Promise<string>((resolve) => {
    const onSignal = (signal: string) => {
      if (stopRequested) {
        // A second Ctrl-C means "now": skip the graceful flush.
        process.stderr.write(`${signal} again: exiting immediately\n`)
        process.exit(130)
      }
      stopRequested = true
      resolve(signal)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })

process.on('unhandledRejection', (reason) => {
  process.stderr.write(
    `unhandled rejection: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}\n`,
  )
  process.exitCode = 70
  process.kill(process.pid, 'SIGTERM')
})

// No top-level await: the single executable runs this as a CommonJS script (Node 24's SEA format).
void runCli(process.argv.slice(2), {
  env: process.env,
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
  waitForStop,
  isTTY: process.stdout.isTTY === true,
  onReload: (fn) => process.on('SIGHUP', fn),
}).then((code) => {
  process.exitCode ||= code
  // Embedded PostgreSQL's child and MQTT sockets are closed by now; nothing should keep the loop alive,
  // but a stray keep-alive socket must not turn a clean stop into a hang under systemd.
  setTimeout(() => process.exit(), 2000).unref()
})

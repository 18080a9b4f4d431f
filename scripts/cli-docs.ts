/**
 * `npm run cli-docs`: writes docs/cli.md from the commands' help texts (src/cli/help.ts), so the page
 * and `paku <command> --help` say the same; src/cli/cli.test.ts fails when they differ.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cliPage } from '../src/cli/help.js'

writeFileSync(join(import.meta.dirname, '..', 'docs', 'cli.md'), cliPage())

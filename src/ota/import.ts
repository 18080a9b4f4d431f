import { createHash } from 'node:crypto'
import { access, constants, readFile } from 'node:fs/promises'
import { join, resolve, sep } from 'node:path'
import { sql } from 'kysely'
import type { Row } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import type { Db } from './store.js'

export type ImportResult = { imported: string[]; missing: string[]; mismatched: string[] }

/**
 * Moves the old OTA service's firmware volume (flat `{model}_{version}.bin` files; docs/compatibility.md,
 * "Firmware storage and naming") into the database: every release row without stored bytes gets its file,
 * if the file's SHA-256 is the one recorded. Safe to run again; nothing already stored is touched.
 */
export async function importFirmwareDir(db: Db, dir: string): Promise<ImportResult> {
  const root = resolve(dir)
  const rows = await sql<
    Row<'firmware_releases', 'id' | 'file_path' | 'checksum_sha256' | 'device_model' | 'version'>
  >`
    SELECT f.id::text AS id, f.file_path, f.checksum_sha256, f.device_model, f.version FROM firmware_releases f
    WHERE NOT EXISTS (SELECT 1 FROM firmware_images i WHERE i.release_id = f.id) ORDER BY f.id`.execute(
    db,
  )
  const out: ImportResult = { imported: [], missing: [], mismatched: [] }
  for (const r of rows.rows) {
    const label = `${r.device_model} ${r.version}`
    const path = resolve(join(root, r.file_path))
    // file_path comes from the database: never read outside the directory given.
    if (!path.startsWith(root + sep)) {
      out.missing.push(`${label} (file_path ${JSON.stringify(r.file_path)} leaves the directory)`)
      continue
    }
    let data: Buffer
    try {
      data = await readFile(path)
    } catch {
      out.missing.push(`${label} (${r.file_path})`)
      continue
    }
    const sha = createHash('sha256').update(data).digest('hex')
    if (sha !== r.checksum_sha256.toLowerCase()) {
      out.mismatched.push(`${label} (${r.file_path}: sha256 ${sha}, recorded ${r.checksum_sha256})`)
      continue
    }
    const md5 = createHash('md5').update(data).digest('hex')
    await db.transaction().execute(async (tx) => {
      await tx
        .insertInto('firmware_images')
        .values({ release_id: r.id, data })
        .onConflict((oc) => oc.doNothing())
        .execute()
      await tx
        .updateTable('firmware_releases')
        .set({ checksum_md5: sql`COALESCE(checksum_md5, ${md5})`, file_size: data.length })
        .where('id', '=', r.id)
        .execute()
    })
    out.imported.push(label)
  }
  return out
}

/**
 * Reads the old service's firmware volume into the database for releases adopted without their
 * image, so they can be downloaded and rolled out at once. Already stored ones are not read again;
 * a directory that cannot be read stops the start (a typo would otherwise go unnoticed).
 */
export async function adoptFirmwareDir(o: {
  db: () => Db
  dir: string
  log: Logger
}): Promise<void> {
  const { dir, log } = o
  try {
    await access(dir, constants.R_OK | constants.X_OK)
  } catch (err) {
    throw new Error(
      `ota.firmwareDir: cannot read ${dir} (${(err as NodeJS.ErrnoException).code ?? errorText(err)})`,
      { cause: err },
    )
  }
  const r = await importFirmwareDir(o.db(), dir)
  if (r.imported.length > 0)
    log.info('firmware read from the old firmware volume', { dir, releases: r.imported })
  if (r.missing.length > 0)
    log.warn(
      'adopted releases without their file in ota.firmwareDir; they cannot be downloaded until uploaded again',
      { dir, releases: r.missing },
    )
  if (r.mismatched.length > 0)
    log.error('files in ota.firmwareDir do not match the SHA-256 recorded for them; not imported', {
      dir,
      releases: r.mismatched,
    })
}

/** What the OTA admin and device routes share: their options, parameter checks and the release view. */
import type { Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import type { OtaCounters } from './metrics.js'
import type { CheckRequest, PullRequest } from './pull-decisions.js'
import type { Rollout } from './rollouts.js'
import type * as store from './store.js'

export type RoutesOptions = {
  config: Config['ota']
  db: () => store.Db
  log: Logger
  counters: OtaCounters
  downloadUrl: (model: string, version: string) => string
  updateUrl: (model: string, deviceId: string, token: string) => string
  pullDecision: (d: PullRequest) => Promise<{ release: store.Release } | { reason: string }>
  checkDecision: (
    c: CheckRequest,
  ) => Promise<{ rollout: Rollout; release: store.Release } | undefined>
  rolloutChanged: (id?: string) => Promise<void>
  /** The rate limiters' clock (tests). */
  now?: () => number
}

/** A model or version in a URL or form: the old service's slug rule. */
export const slug = (raw: string | undefined, name: string): string => {
  if (raw === undefined || raw === '')
    throw new HTTPException(400, { message: `${name}: required` })
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(raw))
    throw new HTTPException(400, { message: `${name}: must be 1–64 letters, digits, . _ or -` })
  return raw
}
export const optionalText = (
  raw: string | undefined,
  name: string,
  max = 10_000,
): string | null => {
  if (raw === undefined || raw === '') return null
  if (raw.length > max)
    throw new HTTPException(400, { message: `${name}: at most ${max} characters` })
  return raw
}

export function required(raw: string | undefined, name: string): string {
  if (raw === undefined || raw === '')
    throw new HTTPException(400, { message: `${name}: required` })
  return raw
}

/** Who did it, for created_by: the named key, or 'admin' for the configured key (the old service wrote 'admin'). */
export function keyName(c: Context): string {
  const name = (c.get as (k: string) => unknown)('keyName')
  return typeof name === 'string' ? name : 'admin'
}

/** A release for the API: the old fields first (the CI workflow reads version and checksum_sha256). */
export function releaseView(r: store.Release) {
  return {
    version: r.version,
    device_model: r.device_model,
    file_size: r.file_size,
    checksum_sha256: r.checksum_sha256,
    checksum_md5: r.checksum_md5,
    is_signed: r.is_signed,
    created_at: r.created_at,
    release_notes: r.release_notes,
    changelog: r.changelog,
    min_version: r.min_version,
    file_path: r.file_path,
    created_by: r.created_by,
    // insertRelease stores a release's metadata as { chip, app }; a release adopted from the old
    // service may lack either.
    chip: (r.metadata as { chip?: string } | null)?.chip ?? null,
    app: (r.metadata as { app?: unknown } | null)?.app ?? null,
  }
}

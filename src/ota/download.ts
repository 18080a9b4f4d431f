import type { Release } from './store.js'

/** Bytes read from the database per query while streaming: bounded memory whatever the image size. */
const CHUNK_BYTES = 256 * 1024

export type ByteRange = { start: number; end: number }

/**
 * RFC 9110 Range for one resource of `size` bytes. Only a single `bytes=` range is honoured (what
 * esp_https_ota and curl -C send); anything else is ignored and the whole image is served, which
 * the RFC allows. 'unsatisfiable' becomes 416.
 */
export function parseRange(
  header: string | undefined,
  size: number,
): ByteRange | 'unsatisfiable' | undefined {
  if (!header) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!m) return undefined
  const [, a = '', b = ''] = m
  if (a === '' && b === '') return undefined
  if (a === '') {
    const suffix = Number(b)
    if (suffix === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(a)
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
  if (!Number.isSafeInteger(start) || start >= size) return 'unsatisfiable'
  if (end < start) return undefined
  return { start, end }
}

export type ImageReader = (offset: number, length: number) => Promise<Buffer>

/**
 * The firmware response every device dialect gets: exact Content-Length (never chunked: Arduino's
 * HTTPUpdate speaks HTTP/1.0 and refuses an unknown size), the old service's headers, x-MD5 for
 * Update.setMD5, an ETag for If-None-Match, and 206 for Range so esp_https_ota can resume.
 */
export function imageResponse({
  req,
  release,
  read,
  onServed,
}: {
  req: { method: string; header(name: string): string | undefined }
  release: Release
  read: ImageReader
  /** Called once the whole response body went out: its bytes, and whether it was a range. */
  onServed?: (bytes: number, partial: boolean) => void
}): Response {
  const etag = `"${release.checksum_sha256}"`
  const size = release.file_size
  const headers = new Headers({
    'content-type': 'application/octet-stream',
    'content-disposition': `attachment; filename="${release.file_path.replace(/[^A-Za-z0-9._+-]/g, '_')}"`,
    'x-firmware-version': release.version,
    'x-checksum-sha256': release.checksum_sha256,
    etag,
    'last-modified': release.created_at.toUTCString(),
    'accept-ranges': 'bytes',
    'cache-control': 'no-cache',
  })
  if (release.checksum_md5) headers.set('x-md5', release.checksum_md5)
  const inm = req.header('if-none-match')
  if (
    inm &&
    (inm.trim() === '*' || inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag))
  ) {
    return new Response(null, { status: 304, headers })
  }
  // If-Range: resume only when the image is still the one the client has half of.
  const ifRange = req.header('if-range')
  const range =
    ifRange && ifRange.trim() !== etag ? undefined : parseRange(req.header('range'), size)
  if (range === 'unsatisfiable') {
    headers.set('content-range', `bytes */${size}`)
    headers.set('content-length', '0')
    return new Response(null, { status: 416, headers })
  }
  const start = range?.start ?? 0
  const end = range?.end ?? size - 1
  const length = end - start + 1
  headers.set('content-length', String(length))
  if (range) headers.set('content-range', `bytes ${start}-${end}/${size}`)
  const status = range ? 206 : 200
  if (req.method === 'HEAD') return new Response(null, { status, headers })
  let offset = start
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const n = Math.min(CHUNK_BYTES, end + 1 - offset)
        const chunk = await read(offset, n)
        if (chunk.length !== n)
          throw new Error(
            `firmware image shorter than its recorded size (${release.device_model} ${release.version})`,
          )
        offset += n
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
        if (offset > end) {
          controller.close()
          onServed?.(length, range !== undefined)
        }
      },
    },
    // Nothing is read before the client asks: a HEAD or an aborted request costs no query.
    { highWaterMark: 0 },
  )
  return new Response(body, { status, headers })
}

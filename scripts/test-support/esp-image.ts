/** Builds ESP application images for tests: a real header layout with random payload bytes. */
import { randomBytes } from 'node:crypto'

export function espImage(o: {
  size: number
  chipId?: number
  version?: string
  project?: string
  esp8266?: boolean
  seed?: number
}): Buffer {
  const b = randomBytes(o.size)
  b[0] = 0xe9
  b[1] = 3 // segments
  if (o.esp8266) {
    // A plain 8-byte header; make sure the app-description magic is not there by chance.
    if (b.length >= 36) b.writeUInt32LE(0, 32)
    return b
  }
  if (b.length >= 14) b.writeUInt16LE(o.chipId ?? 0, 12)
  if (b.length >= 208) {
    b.writeUInt32LE(0xabcd5432, 32)
    const field = (text: string, offset: number, len: number) => {
      b.fill(0, offset, offset + len)
      b.write(text.slice(0, len - 1), offset, 'latin1')
    }
    field(o.version ?? '1.0.0', 48, 32)
    field(o.project ?? 'app', 80, 32)
    field('12:00:00', 112, 16)
    field('Nov 27 2026', 128, 16)
    field('v5.1.4', 144, 32)
  }
  return b
}

import { createHash } from 'node:crypto'

/** What paku learns from an uploaded image before it accepts it. */
export type ImageInfo = {
  size: number
  sha256: string
  md5: string
  /** esp32, esp32s3, … from the extended header when the image carries an app description; else esp8266-or-unknown. */
  chip: string
  /** esp_app_desc_t fields (ESP-IDF and Arduino-ESP32 builds); absent for ESP8266 images. */
  app?: { version: string; projectName: string; idfVersion: string; compiledAt: string }
}

const ESP_IMAGE_MAGIC = 0xe9
const APP_DESC_MAGIC = 0xabcd5432
// esp_image_header_t (24 bytes) + the first segment header (8 bytes) put esp_app_desc_t at offset 32.
const APP_DESC_OFFSET = 32
const MAX_SEGMENTS = 16
const CHIPS: Record<number, string> = {
  0: 'esp32',
  2: 'esp32s2',
  5: 'esp32c3',
  9: 'esp32s3',
  12: 'esp32c2',
  13: 'esp32c6',
  16: 'esp32h2',
  18: 'esp32p4',
  20: 'esp32c61',
  23: 'esp32c5',
}

/**
 * Checks that the bytes are an ESP application image (what the device's Update class checks first:
 * the 0xE9 magic, Arduino HTTPUpdate refuses anything else) and reads what the header tells.
 * Returns a sentence for the uploader when it is not.
 */
export function inspectImage(data: Uint8Array, maxBytes: number): ImageInfo | { error: string } {
  if (data.length === 0) return { error: 'the firmware file is empty' }
  if (data.length > maxBytes)
    return {
      error: `the firmware is ${data.length} bytes, more than the limit of ${maxBytes} (ota.maxFirmwareBytes)`,
    }
  if (data[0] !== ESP_IMAGE_MAGIC) {
    return {
      error: `not an ESP firmware image: the first byte is 0x${(data[0] ?? 0).toString(16).padStart(2, '0')}, an application image starts with 0xe9 (upload the firmware .bin, not the merged or ELF file)`,
    }
  }
  if (data.length < 24)
    return { error: `the firmware is ${data.length} bytes, too short for an ESP image header` }
  const segments = data[1] ?? 0
  if (segments < 1 || segments > MAX_SEGMENTS)
    return {
      error: `not an ESP firmware image: it declares ${segments} segments (1–${MAX_SEGMENTS} expected)`,
    }
  const info: ImageInfo = {
    size: data.length,
    sha256: createHash('sha256').update(data).digest('hex'),
    md5: createHash('md5').update(data).digest('hex'),
    chip: 'esp8266-or-unknown',
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  if (
    data.length >= APP_DESC_OFFSET + 176 &&
    view.getUint32(APP_DESC_OFFSET, true) === APP_DESC_MAGIC
  ) {
    const chipId = view.getUint16(12, true)
    info.chip = CHIPS[chipId] ?? `esp-chip-${chipId}`
    info.app = {
      version: cString(data, APP_DESC_OFFSET + 16, 32),
      projectName: cString(data, APP_DESC_OFFSET + 48, 32),
      compiledAt:
        `${cString(data, APP_DESC_OFFSET + 96, 16)} ${cString(data, APP_DESC_OFFSET + 80, 16)}`.trim(),
      idfVersion: cString(data, APP_DESC_OFFSET + 112, 32),
    }
  }
  return info
}

/** A NUL-terminated string field; non-printable bytes are dropped so a crafted header cannot inject control characters. */
function cString(data: Uint8Array, offset: number, length: number): string {
  const field = data.subarray(offset, offset + length)
  const end = field.indexOf(0)
  return Buffer.from(end === -1 ? field : field.subarray(0, end))
    .toString('latin1')
    .replace(/[^\x20-\x7e]/g, '')
}

/**
 * What an Arduino HTTPUpdate (ESP32) or ESP8266httpUpdate client tells about itself in its request
 * headers (docs/ota.md, "Device protocols"). Every value is checked: the headers come from the network.
 */
export type UpdateRequest = {
  family: 'ESP32' | 'ESP8266'
  staMac: string | undefined
  freeSpace: number | undefined
  sketchSize: number | undefined
  sketchMd5: string | undefined
  sketchSha256: string | undefined
  chipSize: number | undefined
  sdkVersion: string | undefined
  mode: 'sketch' | 'spiffs'
  version: string | undefined
}

const MAC = /^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$/
const UINT = /^\d{1,10}$/
const PRINTABLE = /^[\x20-\x7e]{1,64}$/

export function parseUpdateHeaders(
  header: (name: string) => string | undefined,
): UpdateRequest | { error: string } {
  const family =
    header('x-esp32-sta-mac') !== undefined || header('x-esp32-mode') !== undefined
      ? 'ESP32'
      : header('x-esp8266-sta-mac') !== undefined || header('x-esp8266-mode') !== undefined
        ? 'ESP8266'
        : undefined
  if (!family)
    return {
      error:
        'not an HTTPUpdate request: the x-ESP32-* or x-ESP8266-* headers (STA-MAC, mode) are missing',
    }
  const p = `x-${family.toLowerCase()}-`
  const problems: string[] = []
  const get = (name: string, re: RegExp): string | undefined => {
    const raw = header(p + name)
    if (raw === undefined) return undefined
    const value = raw.trim()
    if (!re.test(value)) {
      problems.push(`${p}${name} is malformed`)
      return undefined
    }
    return value
  }
  const num = (name: string) => {
    const s = get(name, UINT)
    return s === undefined ? undefined : Number(s)
  }
  const staMac = get('sta-mac', MAC)?.toUpperCase()
  const mode = get('mode', /^(sketch|spiffs)$/) ?? 'sketch'
  const out: UpdateRequest = {
    family,
    staMac,
    freeSpace: num('free-space'),
    sketchSize: num('sketch-size'),
    sketchMd5: get('sketch-md5', /^[0-9A-Fa-f]{32}$/)?.toLowerCase(),
    // Arduino-ESP32 sends it upper-case; paku stores lower-case.
    sketchSha256: get('sketch-sha256', /^[0-9A-Fa-f]{64}$/)?.toLowerCase(),
    chipSize: num('chip-size'),
    sdkVersion: get('sdk-version', PRINTABLE),
    mode: mode as 'sketch' | 'spiffs',
    version: get('version', PRINTABLE),
  }
  if (problems.length > 0) return { error: problems.join('; ') }
  if (!staMac) return { error: `${p}sta-mac is missing: it identifies the device` }
  return out
}

/** The id a polling device gets when the URL does not name one: its family and MAC, like ESP32-24A160C0FFEE. */
export function deviceIdFromMac(family: string, mac: string): string {
  return `${family}-${mac.replace(/:/g, '').toUpperCase()}`
}

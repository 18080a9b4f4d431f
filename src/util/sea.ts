/** node:sea, as far as paku uses it. */
export type SeaModule = {
  isSea(): boolean
  getAsset(key: string, encoding: string): string
  getAsset(key: string): ArrayBuffer
}

let cache: SeaModule | null | undefined

/**
 * node:sea when this process is the single executable (build/sea.ts); undefined from source, from the
 * ESM bundle, and on a Node without the module. getBuiltinModule keeps this loadable from ESM and CJS alike.
 */
export function seaModule(): SeaModule | undefined {
  if (cache === undefined) {
    const getBuiltin = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule
    const mod = getBuiltin?.('node:sea') as SeaModule | undefined
    cache = mod?.isSea() ? mod : null
  }
  return cache ?? undefined
}

export { ConfigSchema, LOG_LEVELS, type Config, type ConfigInput } from './schema.js'
export { loadConfig, maskSecrets, maskUrl, deepFreeze, type LoadResult } from './load.js'
export { ENV_TABLE, applyEnv } from './env.js'
export {
  importEnv,
  parseComposeEnv,
  renderEnvFile,
  producedEnv,
  NOT_CARRIED,
  type ImportResult,
} from './import-env.js'

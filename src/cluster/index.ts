export { createClusterEmitter, type ClusterEmitter } from './emitter.js'
export { createLeader, type Leader } from './leader.js'

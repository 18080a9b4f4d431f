'use strict'
// Bundled into the executable in place of the `debug` package (build/sea.ts says why). A module that
// asks for a namespace DEBUG does not enable gets a function that does nothing, with no arguments
// array to allocate at every call; a namespace DEBUG enables gets debug's own function. Unlike debug's
// own functions, which follow a later enable(), a namespace is checked once, when the module asks for it
// (at load): DEBUG set at start works, enabling a namespace at run time does not reach modules already
// loaded. Nothing in paku calls enable().
const createDebug = require('debug/src/node.js')

function off() {}
off.enabled = false
off.namespace = ''
off.log = off
off.extend = () => off
off.destroy = () => false

function debugWhenEnabled(namespace) {
  return createDebug.enabled(namespace) ? createDebug(namespace) : off
}

// The rest is debug's own, read through rather than copied: enable() replaces its state (names, skips,
// namespaces), and a copy would go stale.
for (const key of Object.keys(createDebug)) {
  Object.defineProperty(debugWhenEnabled, key, {
    enumerable: true,
    configurable: true,
    get: () => createDebug[key],
    set: (value) => {
      createDebug[key] = value
    },
  })
}
for (const key of ['default', 'debug'])
  Object.defineProperty(debugWhenEnabled, key, { enumerable: true, value: debugWhenEnabled })

module.exports = debugWhenEnabled

'use strict'
// Bundled into the executable in place of the `debug` package (build/sea.ts says why). A module that
// asks for a namespace DEBUG does not enable gets a function that does nothing, with no arguments
// array to allocate at every call; a namespace DEBUG enables gets debug's own function. Like debug's
// own, a namespace is checked when the module asks for it, at load.
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

module.exports = Object.assign(debugWhenEnabled, createDebug, { default: debugWhenEnabled })

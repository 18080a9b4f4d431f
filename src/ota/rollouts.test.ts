import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  compareReleases,
  initialState,
  isTarget,
  judge,
  stagesOf,
  DEVICE_STATES,
  type Counts,
  type Rollout,
  type TargetDevice,
} from './rollouts.js'

function rollout(o: Partial<Rollout> = {}): Rollout {
  return {
    id: '1',
    name: 'r',
    firmware_version: '1.5.0',
    device_model: 'esp32-heater',
    target_type: 'all',
    target_filter: null,
    rollout_percentage: 100,
    is_active: true,
    status: 'running',
    status_reason: null,
    stages: null,
    stage_index: 0,
    auto_advance: false,
    success_threshold_percent: 100,
    error_threshold_count: null,
    error_threshold_percent: null,
    error_threshold_min_executed: 1,
    allow_downgrade: false,
    errors_since: null,
    created_at: new Date(),
    updated_at: new Date(),
    created_by: 'admin',
    ...o,
  }
}
function counts(o: Partial<Counts>): Counts {
  const c = { total: 0 } as Counts
  for (const s of DEVICE_STATES) c[s] = o[s] ?? 0
  c.total = DEVICE_STATES.reduce((n, s) => n + c[s], 0)
  return c
}
/** What tickRollout counts for the error threshold, from the same counts (nothing resumed, nobody already current). */
const recent = (c: Counts) => ({ failed: c.failed, executed: c.failed + c.installed + c.succeeded })
const judgeC = (r: Rollout, c: Counts) => judge(r, c, recent(c))
const dev = (o: Partial<TargetDevice> = {}): TargetDevice => ({
  device_id: 'ESP32-20E955A0',
  device_model: 'esp32-heater',
  current_firmware_version: '1.4.2',
  mac_address: null,
  protocol: null,
  groups: [],
  ...o,
})

describe('isTarget', () => {
  it('all: the model, nothing else', () => {
    assert.equal(isTarget(rollout(), dev()), true)
    assert.equal(isTarget(rollout(), dev({ device_model: 'esp8266-wired-sensors' })), false)
  })
  it('canary: the consistent hash (ESP32-20E955A0 sits at 25)', () => {
    assert.equal(isTarget(rollout({ target_type: 'canary', rollout_percentage: 26 }), dev()), true)
    assert.equal(isTarget(rollout({ target_type: 'canary', rollout_percentage: 25 }), dev()), false)
  })
  it('stages widen the same hash', () => {
    const r = rollout({ stages: [10, 25, 50, 100] })
    assert.equal(isTarget({ ...r, stage_index: 1 }, dev()), false)
    assert.equal(isTarget({ ...r, stage_index: 2 }, dev()), true)
  })
  it('specific: the named ids or MACs whatever their model', () => {
    const r = rollout({
      target_type: 'specific',
      target_filter: { device_ids: ['a', 'ESP32-20E955A0'] },
    })
    assert.equal(isTarget(r, dev({ device_model: 'other' })), true)
    assert.equal(isTarget(r, dev({ device_id: 'b' })), false)
    assert.equal(
      isTarget(
        rollout({
          target_type: 'specific',
          target_filter: { mac_addresses: ['24:a1:60:c0:ff:ee'] },
        }),
        dev({ mac_address: '24A160C0FFEE' }),
      ),
      true,
    )
  })
  it('group: members only', () => {
    const r = rollout({ target_type: 'group', target_filter: { groups: ['van'] } })
    assert.equal(isTarget(r, dev({ groups: ['van'] })), true)
    assert.equal(isTarget(r, dev({ groups: ['cabin'] })), false)
    // The old service's shape, in rollouts adopted from it.
    const old = rollout({ target_type: 'group', target_filter: { group: 'van' } })
    assert.equal(isTarget(old, dev({ groups: ['van'] })), true)
    assert.equal(isTarget(old, dev({ groups: ['cabin'] })), false)
  })
  it("device_models replaces the release's model in the match (firmware env ≠ reported model)", () => {
    const r = rollout({
      device_model: 'lilygo-t-display-s3-heater',
      target_filter: { device_models: ['lilygo-t-display-s3'] },
    })
    assert.equal(isTarget(r, dev({ device_model: 'lilygo-t-display-s3' })), true)
    assert.equal(isTarget(r, dev({ device_model: 'lilygo-t-display-s3-heater' })), false)
  })
  it('one-stage defaults: the old rollout_percentage; specific ignores it', () => {
    assert.deepEqual(stagesOf(rollout({ rollout_percentage: 25 })), [25])
    assert.deepEqual(stagesOf(rollout({ target_type: 'specific', rollout_percentage: 0 })), [100])
  })
})

describe('initialState', () => {
  const r = rollout()
  it('same version → succeeded', () => assert.equal(initialState(r, '1.5.0').state, 'succeeded'))
  it('v-prefixed same version → succeeded', () =>
    assert.equal(initialState(r, 'v1.5.0').state, 'succeeded'))
  it('older → pending', () => assert.equal(initialState(r, '1.4.9').state, 'pending'))
  it('unknown → pending', () => assert.equal(initialState(r, null).state, 'pending'))
  it('newer → skipped (no downgrade)', () =>
    assert.match(initialState(r, '1.10.0').detail ?? '', /runs newer 1.10.0/))
  it('newer with allow_downgrade → pending', () =>
    assert.equal(initialState({ ...r, allow_downgrade: true }, '1.10.0').state, 'pending'))
  it('not semver and different → pending', () =>
    assert.equal(initialState(r, 'test-20260101').state, 'pending'))
  it('opaque versions compare by upload time where both were uploaded', () => {
    const uploaded = new Map([
      ['test-20260101-120000', 1000],
      ['abc1234-20260102', 2000],
      [r.firmware_version, 1500],
    ])
    assert.equal(compareReleases('test-20260101-120000', 'abc1234-20260102', uploaded), -1)
    assert.equal(compareReleases('abc1234-20260102', 'test-20260101-120000', uploaded), 1)
    assert.equal(compareReleases('1.4.2', '1.10.0', uploaded), -1, 'semver where both are semver')
    assert.equal(
      compareReleases('test-x', 'test-y', uploaded),
      undefined,
      'unknown without upload times',
    )
    assert.equal(
      initialState(r, 'abc1234-20260102', uploaded).state,
      'skipped',
      'a later upload runs: a downgrade',
    )
    assert.equal(initialState(r, 'test-20260101-120000', uploaded).state, 'pending')
  })
})

describe('judge', () => {
  it('pauses at the error count', () => {
    const d = judgeC(rollout({ error_threshold_count: 2 }), counts({ failed: 2, notified: 5 }))
    assert.equal(d?.status, 'paused')
    assert.match(d?.reason ?? '', /2 devices failed/)
  })
  it('pauses at the error percentage once enough devices finished', () => {
    const r = rollout({ error_threshold_percent: 50, error_threshold_min_executed: 3 })
    assert.equal(
      judgeC(r, counts({ failed: 2, notified: 10 })),
      undefined,
      'two executed is below min_executed',
    )
    assert.equal(judgeC(r, counts({ failed: 2, succeeded: 1, notified: 10 }))?.status, 'paused')
    assert.equal(judgeC(r, counts({ failed: 1, succeeded: 2, notified: 10 })), undefined)
  })
  it('advances when the stage meets the success threshold', () => {
    const r = rollout({ stages: [10, 50, 100], auto_advance: true, success_threshold_percent: 80 })
    assert.equal(judgeC(r, counts({ succeeded: 3, notified: 1 })), undefined)
    const d = judgeC(r, counts({ succeeded: 4, installed: 0, notified: 1 }))
    assert.equal(d?.stageIndex, 1)
    assert.match(d?.reason ?? '', /widening to 50 %/)
  })
  it('does not advance without auto_advance', () =>
    assert.equal(judgeC(rollout({ stages: [10, 100] }), counts({ succeeded: 4 })), undefined))
  it('an empty stage advances (10 % of a small fleet may be nobody)', () =>
    assert.equal(
      judgeC(rollout({ stages: [10, 100], auto_advance: true }), counts({}))?.stageIndex,
      1,
    ))
  it('completes when the last stage has nothing open', () => {
    assert.equal(
      judgeC(rollout(), counts({ succeeded: 3, failed: 1, skipped: 1 }))?.status,
      'completed',
    )
    assert.equal(
      judgeC(rollout(), counts({ succeeded: 3, installed: 1 })),
      undefined,
      'installed still waits for the version report',
    )
    assert.equal(judgeC(rollout(), counts({})), undefined, 'no devices yet')
  })
  it('counts errors since the last resume only', () => {
    const r = rollout({ error_threshold_count: 2 })
    assert.equal(
      judge(r, counts({ failed: 3, notified: 2 }), { failed: 1, executed: 1 }),
      undefined,
    )
    assert.equal(
      judge(r, counts({ failed: 3, notified: 2 }), { failed: 2, executed: 2 })?.status,
      'paused',
    )
  })
  it('reopens a completed rollout when devices joined', () => {
    assert.equal(
      judgeC(rollout({ status: 'completed' }), counts({ succeeded: 3, pending: 1 }))?.status,
      'running',
    )
    assert.equal(judgeC(rollout({ status: 'completed' }), counts({ succeeded: 3 })), undefined)
  })
  it('leaves paused rollouts alone', () =>
    assert.equal(
      judgeC(rollout({ status: 'paused', error_threshold_count: 1 }), counts({ failed: 3 })),
      undefined,
    ))
})

/** The GitHub workflows parse and do what the README and docs/operations.md, "The GitHub workflows" say they do. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { parse } from 'yaml'

type Workflow = {
  on: Record<string, unknown>
  jobs: Record<
    string,
    { steps: Array<{ run?: string; uses?: string; with?: Record<string, unknown> }> }
  >
}
const load = (name: string) => parse(readFileSync(`.github/workflows/${name}`, 'utf8')) as Workflow
const runs = (w: Workflow) =>
  Object.values(w.jobs)
    .flatMap((j) => j.steps.map((s) => s.run ?? s.uses ?? ''))
    .join('\n')

describe('GitHub workflows', () => {
  it('CI runs .ci/run (tests, build, smoke) on pushes and pull requests', () => {
    const w = load('ci.yml')
    assert.ok('push' in w.on && 'pull_request' in w.on)
    assert.match(runs(w), /^bash \.ci\/run$/m)
  })
  it('a v* tag builds, smoke-tests and releases the binary with its SHA-256', () => {
    const w = load('release.yml')
    assert.deepEqual((w.on.push as { tags: string[] }).tags, ['v*'])
    const text = runs(w)
    for (const want of [
      /npm run build/,
      /npm run smoke/,
      /sha256sum "\$name" > "\$name.sha256"/,
      /softprops\/action-gh-release/,
    ])
      assert.match(text, want)
    const files = String(
      Object.values(w.jobs)[0]?.steps.find((s) => s.uses?.startsWith('softprops/'))?.with?.files,
    )
    assert.match(files, /linux-x64\n.*linux-x64\.sha256/)
  })
  it('deploy checks the SHA-256, restarts, waits for /health and rolls back', () => {
    const w = load('deploy.yml')
    const text = runs(w)
    for (const want of [
      /sha256sum -c/,
      /systemctl restart paku/,
      /paku wait-ready/,
      /curl -fsS http:\/\/127\.0\.0\.1:8080\/health/,
      /paku\.previous \/usr\/local\/bin\/paku/,
    ])
      assert.match(text, want)
    // Started by hand with a release tag, with the secrets docs/operations.md lists.
    assert.deepEqual(Object.keys(w.on), ['workflow_dispatch'])
    assert.equal(
      (w.on.workflow_dispatch as { inputs: { tag: { required: boolean } } }).inputs.tag.required,
      true,
    )
    const secrets = [
      ...new Set(readFileSync('.github/workflows/deploy.yml', 'utf8').match(/secrets\.\w+/g)),
    ].sort()
    assert.deepEqual(secrets, [
      'secrets.DEPLOY_HOST',
      'secrets.DEPLOY_KNOWN_HOSTS',
      'secrets.DEPLOY_SSH_KEY',
      'secrets.DEPLOY_USER',
    ])
  })
})

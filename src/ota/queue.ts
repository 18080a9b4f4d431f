import { errorText, type Logger } from '../log/index.js'

/**
 * The rollout queue: rollout passes, device reports and command vetting run one job at a time, so they
 * never race each other inside this process. A failing job is logged on the state change only.
 */
export function createWorkQueue(log: Logger) {
  let chain: Promise<void> = Promise.resolve()
  let failing: string | null = null

  function enqueue(job: () => Promise<void>): Promise<void> {
    const next = chain.then(job).then(
      () => {
        if (failing) log.info('rollout work recovered')
        failing = null
      },
      (err: unknown) => {
        if (!failing) log.error('rollout work failing', { err: errorText(err) })
        failing = errorText(err)
      },
    )
    chain = next
    return next
  }

  return {
    enqueue,
    /** Settles once every job queued so far has run. */
    idle: (): Promise<void> => chain,
    /** The error of the last job when it failed, else null. */
    lastError: (): string | null => failing,
  }
}

export type Enqueue = (job: () => Promise<void>) => Promise<void>

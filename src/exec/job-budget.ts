/**
 * One size budget for what a job carries besides its input files: the code and its arguments, in UTF-8
 * bytes. The API refuses a larger job with 413 before any jail work; the worker protocol accepts any job
 * within it (as several frames), so nothing admitted can be refused later by the sandbox.
 */
export const JOB_BUDGET_BYTES = 4 * 1024 * 1024
/** What the job's other fields may add: up to 1000 input names of at most 1024 bytes. */
const JOB_FIELDS_BYTES = 1024 * 1024
/** JSON escapes a control character as \u00XX: six bytes for one. */
const WORST_JSON_EXPANSION = 6

/** The largest job message the worker must accept for any job within the budget. */
export const MAX_JOB_MESSAGE_BYTES = WORST_JSON_EXPANSION * (JOB_BUDGET_BYTES + JOB_FIELDS_BYTES)
/** The largest message the server accepts from a worker (tool calls, display data, its done report). */
export const MAX_WORKER_MESSAGE_BYTES = 8 * 1024 * 1024

export function jobBytes (code: string, args: readonly string[]): number {
  return args.reduce((sum, arg) => sum + Buffer.byteLength(arg), Buffer.byteLength(code))
}

export function formatBudget (): string {
  return `${JOB_BUDGET_BYTES / 1024 / 1024} MiB`
}

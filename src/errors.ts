/**
 * Every error the API answers with: a stable machine code, its HTTP status, and a human message.
 * The program's own failures (exceptions, timeouts, OOM) are not errors here: they are outcomes in a 200.
 */
export class ApiError extends Error {
  override name = 'ApiError'
  constructor (
    readonly code: string,
    readonly statusCode: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
    options?: ErrorOptions
  ) {
    super(message, options)
  }
}

function defineError (code: string, statusCode: number) {
  const make = (message: string, extra?: Record<string, unknown>, options?: ErrorOptions) =>
    new ApiError(code, statusCode, message, extra, options)
  return Object.assign(make, { code, statusCode })
}

export const errors = {
  invalidRequest: defineError('invalid_request', 400),
  unsupportedLanguage: defineError('unsupported_language', 400),
  invalidFileName: defineError('invalid_file_name', 400),
  invalidId: defineError('invalid_id', 400),
  invalidExecutionProfile: defineError('invalid_execution_profile', 400),
  unauthorized: defineError('unauthorized', 401),
  permissionDenied: defineError('permission_denied', 403),
  fileNotFound: defineError('file_not_found', 404),
  notFound: defineError('not_found', 404),
  conflict: defineError('conflict', 409),
  executionProfileMismatch: defineError('execution_profile_mismatch', 409),
  statefulWorkspaceUnsupported: defineError('stateful_workspace_unsupported', 409),
  payloadTooLarge: defineError('payload_too_large', 413),
  unsupportedMediaType: defineError('unsupported_media_type', 415),
  inputsTooLarge: defineError('inputs_too_large', 413),
  rateLimited: defineError('rate_limited', 429),
  internal: defineError('internal_error', 500),
  jailUnavailable: defineError('jail_unavailable', 503),
  shuttingDown: defineError('shutting_down', 503),
  storageUnavailable: defineError('storage_unavailable', 503),
  clusterUnavailable: defineError('cluster_unavailable', 503),
} as const

export type ErrorCode = (typeof errors)[keyof typeof errors]['code']

export function isApiError (value: unknown): value is ApiError {
  return value instanceof ApiError
}

/**
 * Failures of the layers below the API (exec, pool, storage, live workers): a stable code in the undici
 * style and no HTTP status. They never know about HTTP; the one error boundary (src/api/error-boundary.ts)
 * maps each code to an answer from the table above.
 */
export class WardenError extends Error {
  override name = 'WardenError'
  constructor (
    readonly code: WardenErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    options?: ErrorOptions
  ) {
    super(message, options)
  }
}

export const WARDEN_ERRORS = {
  /** every worker is busy and the queue is full, or the wait ran out; details.retryAfterSeconds */
  poolBusy: 'WARDEN_POOL_BUSY',
  /** one user already runs as many executions as allowed; details.retryAfterSeconds */
  userBusy: 'WARDEN_USER_BUSY',
  /** no jail is running, or the jail died under a run */
  jailUnavailable: 'WARDEN_JAIL_UNAVAILABLE',
  inputNotFound: 'WARDEN_INPUT_NOT_FOUND',
  inputsTooLarge: 'WARDEN_INPUTS_TOO_LARGE',
  invalidFileName: 'WARDEN_INVALID_FILE_NAME',
  invalidId: 'WARDEN_INVALID_ID',
  invalidFileKind: 'WARDEN_INVALID_FILE_KIND',
  fileTooLarge: 'WARDEN_FILE_TOO_LARGE',
  /** the caps on live workers (total or per user) are reached; details.retryAfterSeconds */
  liveCapacity: 'WARDEN_LIVE_CAPACITY',
  /** a live worker (kernel, paused run) that does not exist for this caller */
  liveNotFound: 'WARDEN_LIVE_NOT_FOUND',
  /** tool results that do not answer the paused round's calls (one each, no others) */
  invalidToolResults: 'WARDEN_INVALID_TOOL_RESULTS',
  /** the object store (STORAGE=s3) did not answer or refused: nothing was stored or read */
  storageUnavailable: 'WARDEN_STORAGE_UNAVAILABLE',
  /** Redis (REDIS_URL), which every replica shares, did not answer: nothing shared was changed */
  clusterUnavailable: 'WARDEN_CLUSTER_UNAVAILABLE',
} as const

export type WardenErrorCode = (typeof WARDEN_ERRORS)[keyof typeof WARDEN_ERRORS]

export function isWardenError (value: unknown, code?: WardenErrorCode): value is WardenError {
  return value instanceof WardenError && (code === undefined || value.code === code)
}

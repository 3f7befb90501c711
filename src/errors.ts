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
  fileNotFound: defineError('file_not_found', 404),
  notFound: defineError('not_found', 404),
  executionProfileMismatch: defineError('execution_profile_mismatch', 409),
  payloadTooLarge: defineError('payload_too_large', 413),
  unsupportedMediaType: defineError('unsupported_media_type', 415),
  inputsTooLarge: defineError('inputs_too_large', 413),
  rateLimited: defineError('rate_limited', 429),
  internal: defineError('internal_error', 500),
  jailUnavailable: defineError('jail_unavailable', 503),
  shuttingDown: defineError('shutting_down', 503),
} as const

export type ErrorCode = (typeof errors)[keyof typeof errors]['code']

export function isApiError (value: unknown): value is ApiError {
  return value instanceof ApiError
}

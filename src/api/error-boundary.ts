import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod'
import { ApiError, WARDEN_ERRORS, errors, isApiError, type WardenError, type WardenErrorCode } from '../errors.ts'

/** How each failure of the layers below becomes an answer: the one place errors are translated. */
const FROM_WARDEN: Record<WardenErrorCode, (error: WardenError, draining: boolean) => ApiError> = {
  [WARDEN_ERRORS.poolBusy]: (error) => rateLimited(error),
  [WARDEN_ERRORS.userBusy]: (error) => rateLimited(error),
  [WARDEN_ERRORS.liveCapacity]: (error) => rateLimited(error),
  // a run cut short because the server is stopping says so, not that the sandbox broke
  [WARDEN_ERRORS.jailUnavailable]: (error, draining) => draining
    ? errors.shuttingDown('Warden is shutting down and stopped this execution before it finished; retry.', {}, { cause: error })
    : errors.jailUnavailable(error.message, {}, { cause: error }),
  [WARDEN_ERRORS.inputNotFound]: (error) => errors.fileNotFound(error.message),
  [WARDEN_ERRORS.liveNotFound]: (error) => errors.notFound(error.message),
  [WARDEN_ERRORS.inputsTooLarge]: (error) => errors.inputsTooLarge(error.message),
  [WARDEN_ERRORS.invalidFileName]: (error) => errors.invalidFileName(error.message),
  [WARDEN_ERRORS.invalidId]: (error) => errors.invalidId(error.message),
  [WARDEN_ERRORS.invalidFileKind]: (error) => errors.invalidRequest(error.message),
  [WARDEN_ERRORS.fileTooLarge]: (error) => errors.payloadTooLarge(error.message),
  [WARDEN_ERRORS.invalidToolResults]: (error) => errors.invalidRequest(error.message),
  [WARDEN_ERRORS.storageUnavailable]: (error) => errors.storageUnavailable(error.message, {}, { cause: error }),
  [WARDEN_ERRORS.clusterUnavailable]: (error) => errors.clusterUnavailable(error.message, {}, { cause: error }),
}

function rateLimited (error: WardenError): ApiError {
  const seconds = typeof error.details.retryAfterSeconds === 'number' ? error.details.retryAfterSeconds : 1
  return errors.rateLimited(`${error.message} Retry after ${seconds} s.`, { retry_after_seconds: seconds })
}

/** Every failure becomes one of the codes in errors.ts; unknown ones say nothing about internals. */
export function toApiError (error: unknown, draining = false): ApiError {
  if (isApiError(error)) return error
  if (error instanceof Error && 'code' in error && typeof error.code === 'string' && error.code in FROM_WARDEN && error.name === 'WardenError') {
    return FROM_WARDEN[error.code as WardenErrorCode](error as WardenError, draining)
  }
  const fastifyError = error as FastifyError
  if (hasZodFastifySchemaValidationErrors(fastifyError)) {
    const details = fastifyError.validation.map((issue) => {
      const where = issue.instancePath.replace(/^\//, '').replace(/\//g, '.')
      return where === '' ? issue.message : `${where}: ${issue.message}`
    })
    return errors.invalidRequest(`Invalid request ${fastifyError.validationContext ?? 'input'}: ${details.join('; ')}.`)
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.payloadTooLarge('The request body is larger than the limit.')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return errors.unsupportedMediaType('Unsupported Content-Type; send application/json (or multipart/form-data to /upload).')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.invalidRequest('The JSON body is empty.')
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return errors.invalidRequest('The Content-Length header does not match the body.')
    // multipart (@fastify/multipart and busboy)
    case 'FST_REQ_FILE_TOO_LARGE':
      return errors.payloadTooLarge('The file is larger than the upload limit.')
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return errors.payloadTooLarge('Too many parts in the upload.')
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return errors.unsupportedMediaType('POST /upload expects multipart/form-data.')
  }
  if (error instanceof Error && /Unexpected end of form|Malformed part header|Multipart: Boundary not found/i.test(error.message)) {
    return errors.invalidRequest(`The multipart body is malformed: ${error.message}.`)
  }
  if (error instanceof SyntaxError || (fastifyError.statusCode === 400 && /JSON/i.test(fastifyError.message))) {
    return errors.invalidRequest('The body is not valid JSON.')
  }
  if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    return new ApiError('invalid_request', fastifyError.statusCode, fastifyError.message)
  }
  return errors.internal('Internal error; the server log has the details.', {}, { cause: error })
}

/** The one error handler: `{ error, message }` with the mapped status, and Retry-After on 429. */
export async function renderError (error: unknown, request: FastifyRequest, reply: FastifyReply, draining: boolean): Promise<void> {
  const apiError = toApiError(error, draining)
  if (apiError.statusCode >= 500) request.log.error({ err: error }, 'request failed')
  else request.log.info({ error: apiError.code, status: apiError.statusCode }, 'request rejected')
  if (apiError.code === errors.rateLimited.code && typeof apiError.extra.retry_after_seconds === 'number') {
    reply.header('retry-after', String(Math.ceil(apiError.extra.retry_after_seconds)))
  }
  await reply.code(apiError.statusCode).send({ error: apiError.code, message: apiError.message, ...apiError.extra })
}

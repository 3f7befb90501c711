import { pino } from 'pino'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig } from './config.ts'
import { StartupError, startServices } from './services.ts'

/**
 * Log lines go out in writes of up to 4 KiB, at least every LOG_FLUSH_MS: a write per line was the largest
 * single cost of the server's own CPU per execution at LOG_LEVEL=info (one request line each).
 */
const LOG_FLUSH_MS = 200
// a reader of stdout that stops reading costs at most this much memory: later lines are dropped, not queued
const LOG_BUFFER_MAX_BYTES = 16 * 2 ** 20
const logDestination = pino.destination({ dest: 1, minLength: 4096, maxLength: LOG_BUFFER_MAX_BYTES, sync: false })
setInterval(() => logDestination.flush(), LOG_FLUSH_MS).unref()
// what is buffered goes out before the process exits, whatever the way out (an uncaught error too)
process.once('exit', () => {
  try {
    logDestination.flushSync()
  } catch {
    // a closed stdout: nothing more can be done for those lines
  }
})

async function main (): Promise<void> {
  const config = loadConfig()
  const log = pino({
    level: config.logLevel,
    redact: { paths: ['req.headers["x-api-key"]', 'req.headers.authorization'], censor: '[redacted]' },
  }, logDestination)
  const services = await startServices(config, log)
  let draining = false
  const app = await buildApp(config, {
    store: services.store,
    workers: services.pool,
    flavorOf: services.flavorOf,
    live: services.live,
    kernels: services.kernels,
    workspaces: services.workspaces,
    cluster: services.cluster,
    state: services.state,
    languages: services.languages,
    metrics: services.metrics,
    isReady: services.isReady,
    isDraining: () => draining,
    log,
  })

  // SIGTERM: refuse new requests, let running executions finish (up to the deadline), then stop the
  // jails. Stored files are already durable: nothing acknowledged is lost.
  const shutdown = async (signal: string) => {
    if (draining) return
    draining = true
    log.info({ signal, deadlineMs: config.shutdownTimeoutMs }, 'shutting down')
    const deadline = new Promise<'deadline'>((resolve) => setTimeout(() => resolve('deadline'), config.shutdownTimeoutMs).unref())
    if (await Promise.race([app.close().then(() => 'closed' as const), deadline]) === 'deadline') {
      log.warn('executions still running at the shutdown deadline are stopped')
    }
    await services.close()
    log.info('stopped')
    process.exit(0)
  }
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => { shutdown(signal).catch((error: unknown) => { log.error({ err: error }, 'shutdown failed'); process.exit(1) }) })
  }

  await services.pool.ready()
  const address = await app.listen({ host: config.host, port: config.port })
  const selfTest = await services.selfTest(Number(new URL(address).port))
  if (!selfTest.passed) {
    const failed = selfTest.checks.filter((check) => !check.ok).map((check) => `${check.name}: ${check.detail}`)
    log.fatal({ checks: selfTest.checks }, 'self-test failed')
    await app.close()
    await services.close()
    throw new StartupError(`the self-test failed in a real jail (${services.driver.name}), so no code will run here:\n  ${failed.join('\n  ')}`)
  }
  log.info({ address, jail: services.driver.name, selfTestMs: selfTest.durationMs }, 'Warden is ready')
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError || error instanceof StartupError) {
    process.stderr.write(`warden: ${error.message}\n`)
  } else {
    process.stderr.write(`warden: failed to start: ${(error as Error).stack ?? String(error)}\n`)
  }
  process.exit(1)
})

import { pino } from 'pino'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig } from './config.ts'
import { StartupError, startServices } from './services.ts'

async function main (): Promise<void> {
  const config = loadConfig()
  const log = pino({
    level: config.logLevel,
    redact: { paths: ['req.headers["x-api-key"]', 'req.headers.authorization'], censor: '[redacted]' },
  })
  const services = await startServices(config, log)
  const app = await buildApp(config, { store: services.store, workers: services.pool, health: services.health, log })

  let closing = false
  const shutdown = async (signal: string) => {
    if (closing) return
    closing = true
    log.info({ signal }, 'shutting down')
    await app.close()
    await services.close()
    process.exit(0)
  }
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => { shutdown(signal).catch((error: unknown) => { log.error({ err: error }, 'shutdown failed'); process.exit(1) }) })
  }

  await services.pool.ready()
  const address = await app.listen({ host: config.host, port: config.port })
  log.info({ address, jail: services.driver.name }, 'Warden is ready')
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError || error instanceof StartupError) {
    process.stderr.write(`warden: ${error.message}\n`)
  } else {
    process.stderr.write(`warden: failed to start: ${(error as Error).stack ?? String(error)}\n`)
  }
  process.exit(1)
})

import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { Config } from '../config.ts'
import { createBubblewrapDriver } from './bubblewrap.ts'
import type { JailDriver } from './jail-spec.ts'
import { createNsjailDriver } from './nsjail.ts'

const run = promisify(execFile)

export class NoJailDriverError extends Error {
  override name = 'NoJailDriverError'
}

/**
 * The installed drivers JAIL allows, in order of preference: JAIL=auto prefers nsjail (production) and
 * falls back to bubblewrap (packaged by Debian and Ubuntu). A driver here runs; whether the host lets it
 * start a jail is found out by starting one (`startWithFirstWorkingDriver`).
 */
export async function findJailDrivers (jail: Config['jail']): Promise<JailDriver[]> {
  const drivers: JailDriver[] = []
  const attempts: string[] = []
  if (jail.driver === 'nsjail' || jail.driver === 'auto') {
    try {
      drivers.push(await createNsjailDriver(jail.nsjailPath, jail.nsjailConfig))
    } catch (error) {
      attempts.push(`nsjail (${jail.nsjailPath}): ${describe(error)}`)
    }
  }
  if (jail.driver === 'bwrap' || jail.driver === 'auto') {
    try {
      await run('setpriv', ['--version'])
      drivers.push(await createBubblewrapDriver(jail.bwrapPath))
    } catch (error) {
      attempts.push(`bubblewrap (${jail.bwrapPath}, with setpriv): ${describe(error)}`)
    }
  }
  if (drivers.length > 0) return drivers
  throw new NoJailDriverError(
    `no usable jail driver for JAIL=${jail.driver}: ${attempts.join('; ')}. ` +
    'Install bubblewrap (apt-get install bubblewrap) or nsjail, or point BWRAP_PATH / NSJAIL_PATH at them.')
}

/** The driver JAIL selects among the installed ones (its first choice). */
export async function selectJailDriver (jail: Config['jail']): Promise<JailDriver> {
  return (await findJailDrivers(jail))[0] as JailDriver
}

export interface DriverStart<T> {
  driver: JailDriver
  started: T
  /** one line per driver tried before, saying why its jail did not start */
  failures: string[]
}

/**
 * Starts the jail with each driver in turn until one works. A driver that runs may still be refused by
 * the host: in Docker without CAP_SYS_ADMIN, bubblewrap could not get its user namespace's id maps
 * written (F3 of the deployment issue). So JAIL=auto tries a real jail before it settles, and what
 * failed is kept for /health and the doctor. If none starts, the error names each driver's reason.
 */
export async function startWithFirstWorkingDriver<T> (drivers: JailDriver[], start: (driver: JailDriver) => Promise<T>): Promise<DriverStart<T>> {
  const failures: string[] = []
  for (const driver of drivers) {
    try {
      return { driver, started: await start(driver), failures }
    } catch (error) {
      failures.push(`${driver.name} could not start a jail: ${(error as Error).message}`)
    }
  }
  throw new NoJailDriverError(failures.join('; '))
}

function describe (error: unknown): string {
  const code = (error as { code?: unknown }).code
  return code === 'ENOENT' ? 'not installed' : (error as Error).message.split('\n')[0] ?? 'failed'
}

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

/** JAIL=auto prefers nsjail (production) and falls back to bubblewrap (packaged by Debian and Ubuntu). */
export async function selectJailDriver (jail: Config['jail']): Promise<JailDriver> {
  const attempts: string[] = []
  if (jail.driver === 'nsjail' || jail.driver === 'auto') {
    try {
      return await createNsjailDriver(jail.nsjailPath, jail.nsjailConfig)
    } catch (error) {
      attempts.push(`nsjail (${jail.nsjailPath}): ${describe(error)}`)
    }
  }
  if (jail.driver === 'bwrap' || jail.driver === 'auto') {
    try {
      await run('setpriv', ['--version'])
      return await createBubblewrapDriver(jail.bwrapPath)
    } catch (error) {
      attempts.push(`bubblewrap (${jail.bwrapPath}, with setpriv): ${describe(error)}`)
    }
  }
  throw new NoJailDriverError(
    `no usable jail driver for JAIL=${jail.driver}: ${attempts.join('; ')}. ` +
    'Install bubblewrap (apt-get install bubblewrap) or nsjail, or point BWRAP_PATH / NSJAIL_PATH at them.')
}

function describe (error: unknown): string {
  const code = (error as { code?: unknown }).code
  return code === 'ENOENT' ? 'not installed' : (error as Error).message.split('\n')[0] ?? 'failed'
}

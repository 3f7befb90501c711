import { executeLikeOpenWebUI } from '../test/helpers/openwebui-client.ts'
import { launchServer } from './launch.ts'
import { jailMemoryUsage } from './measure.ts'

export interface IdleKernels { kernels: number, bytesEach: number, perGiB: number }

const KERNELS = 40

/**
 * What an idle kernel costs: a server with a small pool gets KERNELS kernels, each having run a cell
 * (`x = 1`) and then left idle; the memory its cgroup instance holds grows by their cost. Forked pages
 * the kernels share with their zygote are charged to the zygote, not to them.
 */
export async function measureIdleKernels (): Promise<IdleKernels> {
  const server = await launchServer({ POOL_MIN: '2', POOL_MAX: '2', MAX_KERNELS: String(KERNELS), MAX_KERNELS_PER_USER: String(KERNELS), MAX_LIVE_WORKERS: String(KERNELS + 4) })
  try {
    const usage = jailMemoryUsage(server.pid as number)
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const before = usage()
    for (let index = 0; index < KERNELS; index++) {
      const result = await executeLikeOpenWebUI('x = 1\nprint(x)', { url: server.url, token: server.apiKey, keepKernel: true })
      if (result.stdout !== '1') throw new Error(`a kernel did not run: ${result.stderr}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const bytesEach = (usage() - before) / KERNELS
    return { kernels: KERNELS, bytesEach, perGiB: Math.floor(2 ** 30 / bytesEach) }
  } finally {
    await server.stop()
  }
}

export function describeIdleKernels (measured: IdleKernels): string {
  return `Idle kernels: ${measured.kernels} kernels, each after one cell, cost ${(measured.bytesEach / 2 ** 20).toFixed(2)} MiB of memory each ` +
    `(cgroup counters of the server's jails): ${measured.perGiB} idle kernels per GiB.`
}

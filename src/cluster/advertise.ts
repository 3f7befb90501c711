import os from 'node:os'

/**
 * Where the other replicas reach this one when CLUSTER_ADVERTISE_URL is unset: the address it listens
 * on, except that a wildcard (HOST=0.0.0.0 or ::) is no address another host can use, so the first
 * non-loopback IPv4 address of this host stands for it (a container's or a pod's own address).
 */
export function advertisedUrl (listening: string): string {
  const url = new URL(listening)
  if (url.hostname === '0.0.0.0' || url.hostname === '[::]') {
    const external = Object.values(os.networkInterfaces()).flat().find((address) => address?.family === 'IPv4' && !address.internal)
    url.hostname = external?.address ?? '127.0.0.1'
  }
  return url.origin
}

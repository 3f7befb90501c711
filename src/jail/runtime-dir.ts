import { chmod, copyFile, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { SYNTHETIC_ETC } from './mounts.ts'

export interface RuntimeDir {
  root: string
  /** world-readable copy of sandbox/, so unprivileged jails can bind it wherever the checkout lives */
  sandboxDir: string
  etcDir: string
  remove (): Promise<void>
}

/**
 * The server's per-instance runtime directory. The checkout may sit under a 0700 home directory, which
 * a jail running as an unprivileged outside uid cannot traverse; a copy here can be bound from anywhere.
 */
export async function prepareRuntimeDir (root: string, sourceSandboxDir: string): Promise<RuntimeDir> {
  const sandboxDir = path.join(root, 'sandbox')
  const etcDir = path.join(root, 'etc')
  await mkdir(sandboxDir, { recursive: true })
  await mkdir(etcDir, { recursive: true })
  for (const dir of [root, sandboxDir, etcDir]) await chmod(dir, 0o755)
  for (const name of await readdir(sourceSandboxDir)) {
    if (!name.endsWith('.py')) continue
    const target = path.join(sandboxDir, name)
    await copyFile(path.join(sourceSandboxDir, name), target)
    await chmod(target, 0o644)
  }
  for (const [name, content] of Object.entries(SYNTHETIC_ETC)) {
    await writeFile(path.join(etcDir, name), content, { mode: 0o644 })
  }
  return { root, sandboxDir, etcDir, remove: () => rm(root, { recursive: true, force: true }) }
}

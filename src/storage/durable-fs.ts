import fs from 'node:fs/promises'
import path from 'node:path'

const FILE_MODE = 0o600

/** Write a new file (it must not exist) and fsync it: after this returns, its bytes survive a crash. */
export async function writeDurably (filePath: string, text: string): Promise<void> {
  const handle = await fs.open(filePath, 'wx', FILE_MODE)
  try {
    await handle.writeFile(text, 'utf8')
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** A rename is durable only once its directory is fsynced. */
export async function syncDir (dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** Replace `filePath` atomically: a temporary sibling, fsynced, renamed over it, the directory fsynced. */
export async function replaceDurably (filePath: string, text: string, tmpPath: string): Promise<void> {
  await writeDurably(tmpPath, text)
  try {
    await fs.rename(tmpPath, filePath)
  } catch (error) {
    await fs.rm(tmpPath, { force: true })
    throw error
  }
  await syncDir(path.dirname(filePath))
}

import { canAccess, type Identity } from '../auth/identity.ts'
import { errors } from '../errors.ts'
import type { WorkerInput } from '../pool/worker.ts'
import type { FileStore, StoredFile } from '../storage/file-store.ts'
import { validateFileName } from '../storage/file-names.ts'

/** A file named in `files[]` of /exec, after the wire shape was mapped (spec §3.1.1). */
export interface InputRef {
  id: string
  sessionId: string
  name: string
}

export interface ResolvedInput {
  ref: InputRef
  file: StoredFile
}

/**
 * Look every input up in the store before a worker is taken, so a bad reference costs nothing.
 * The same name twice keeps the last one, as LibreChat's own bookkeeping does (newer replaces older).
 */
export async function resolveInputs (refs: InputRef[], store: FileStore, workdirBytes: number, identity: Identity): Promise<ResolvedInput[]> {
  const byName = new Map<string, ResolvedInput>()
  for (const ref of refs) {
    const checked = validateFileName(ref.name)
    if (!checked.ok) throw errors.invalidFileName(`Input file name "${ref.name}" is not allowed: ${checked.reason}`)
    const found = await store.get(ref.sessionId, ref.id)
    // another user's file is reported exactly like a missing one: nothing leaks
    const file = found !== null && canAccess(identity, found) ? found : null
    if (file === null) {
      throw errors.fileNotFound(`Input file "${ref.name}" (${ref.sessionId}/${ref.id}) was not found; it may have expired.`)
    }
    byName.delete(checked.name)
    byName.set(checked.name, { ref: { ...ref, name: checked.name }, file })
  }
  const inputs = [...byName.values()]
  const totalBytes = inputs.reduce((sum, input) => sum + input.file.size, 0)
  if (totalBytes > workdirBytes) {
    throw errors.inputsTooLarge(
      `The input files total ${totalBytes} bytes, more than the work directory quota of ${workdirBytes} bytes.`)
  }
  return inputs
}

/** How a worker reads an input: streamed from the store, marking it used. */
export function toWorkerInputs (inputs: ResolvedInput[], store: FileStore): WorkerInput[] {
  return inputs.map(({ ref, file }) => ({
    name: ref.name,
    size: file.size,
    read: async function * () {
      const opened = await store.open(file.sessionId, file.id)
      if (opened === null) throw new Error(`input ${ref.name} disappeared`)
      for await (const chunk of opened.stream) yield chunk as Uint8Array
    },
  }))
}

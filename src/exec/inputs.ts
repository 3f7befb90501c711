import { canAccess, type Identity } from '../auth/identity.ts'
import { isWardenError, WARDEN_ERRORS, WardenError } from '../errors.ts'
import type { WorkerInput } from '../pool/run.ts'
import type { FileStore, StoredFile } from '../storage/file-store.ts'
import { validateFileName } from '../storage/file-names.ts'

/** A file named in `files[]` of /exec, after the wire shape was mapped (spec §3.1.1). */
export interface InputRef {
  id: string
  storageSessionId: string
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
export async function resolveInputs (refs: InputRef[], store: FileStore, identity: Identity): Promise<ResolvedInput[]> {
  const byName = new Map<string, ResolvedInput>()
  for (const ref of refs) {
    const checked = validateFileName(ref.name)
    if (!checked.ok) throw new WardenError(WARDEN_ERRORS.invalidFileName, `Input file name "${ref.name}" is not allowed: ${checked.reason}`)
    const found = await store.get(ref.storageSessionId, ref.id)
    // another user's file is reported exactly like a missing one: nothing leaks
    const file = found !== null && canAccess(identity, found) ? found : null
    if (file === null) {
      throw new WardenError(WARDEN_ERRORS.inputNotFound, `Input file "${ref.name}" (${ref.storageSessionId}/${ref.id}) was not found; it may have expired.`)
    }
    byName.delete(checked.name)
    byName.set(checked.name, { ref: { ...ref, name: checked.name }, file })
  }
  const explicit = [...byName.values()]
  refuseFileFolderClash(explicit.map((input) => input.ref.name))
  return explicit
}

/**
 * What /mnt/data receives: the workspace's files first, then the injected ones. An injected file replaces
 * a workspace file of the same name, and one that would need a workspace file to be a folder (or the
 * other way round) pushes that workspace file out. All of it must fit the work directory.
 */
export function stagedInputs (workspace: ResolvedInput[], explicit: ResolvedInput[], workdirBytes: number): ResolvedInput[] {
  const injected = new Map(explicit.map((input) => [input.ref.name, input]))
  const kept = workspace.filter((file) => !injected.has(file.ref.name) && !clashes(file.ref.name, injected))
  const inputs = [...kept, ...explicit]
  const footprint = workdirFootprint(inputs.map((input) => input.file.size))
  if (footprint > workdirBytes) {
    throw new WardenError(WARDEN_ERRORS.inputsTooLarge,
      `The input files take ${footprint} bytes of /mnt/data (whole 4 KiB pages), more than its quota of ${workdirBytes} bytes.`)
  }
  return inputs
}

function clashes (name: string, others: Map<string, unknown>): boolean {
  for (const other of others.keys()) {
    if (other.startsWith(`${name}/`) || name.startsWith(`${other}/`)) return true
  }
  return false
}

const PAGE_BYTES = 4096

/** What files of these sizes take on the work directory's tmpfs: whole pages each. */
export function workdirFootprint (sizes: number[]): number {
  return sizes.reduce((sum, size) => sum + Math.ceil(size / PAGE_BYTES) * PAGE_BYTES, 0)
}

/**
 * Where a run's reads of its inputs keep the first failure of the store (S3 gone mid-stream, a file
 * deleted since it was resolved): the worker only sees its job cut short, so the execution answers
 * this failure rather than a broken sandbox.
 */
export interface InputReads { failure: WardenError | null }

/** How a worker reads an input: streamed from the store, marking it used; a failure is kept in `reads`. */
export function toWorkerInputs (inputs: ResolvedInput[], store: FileStore, reads: InputReads = { failure: null }): WorkerInput[] {
  return inputs.map(({ ref, file }) => ({
    name: ref.name,
    size: file.size,
    read: async function * () {
      try {
        const opened = await store.open(file.storageSessionId, file.id)
        if (opened === null) throw new WardenError(WARDEN_ERRORS.inputNotFound, `Input file "${ref.name}" was deleted before the execution read it.`)
        for await (const chunk of opened.stream) yield chunk as Uint8Array
      } catch (error) {
        reads.failure ??= isWardenError(error)
          ? error
          : new WardenError(WARDEN_ERRORS.storageUnavailable, 'The file storage stopped while an input file was read; retry in a moment.', {}, { cause: error })
        throw error
      }
    },
  }))
}

/**
 * `a` and `a/b` cannot both exist under /mnt/data: one would have to be a file and a folder at once.
 * Refused here, before any worker is taken (an outside attack run found it costing a worker).
 */
function refuseFileFolderClash (names: string[]): void {
  const files = new Set(names)
  for (const name of names) {
    const parts = name.split('/')
    for (let depth = 1; depth < parts.length; depth++) {
      const folder = parts.slice(0, depth).join('/')
      if (files.has(folder)) {
        throw new WardenError(WARDEN_ERRORS.invalidFileName, `Input files "${folder}" and "${name}" clash: "${folder}" cannot be a file and a folder at once.`)
      }
    }
  }
}

import { createHash } from 'node:crypto'
import { canAccess, ownerFor, type Identity } from '../auth/identity.ts'
import type { SessionSettings } from '../config.ts'
import type { FileStore, StoredFile } from '../storage/file-store.ts'
import { isId, newId } from '../storage/ids.ts'
import { fileTable, type WorkspaceDelta, type WorkspaceKind, type WorkspaceLimits, type Workspaces } from '../storage/workspaces.ts'
import { formatBytes } from '../units.ts'
import type { ResolvedInput } from './inputs.ts'

/**
 * Where a run keeps its working directory: LibreChat's stateful profile (a runtime session, named by a
 * hint), an execution id named again on /exec (a session continued), or a fresh execution that records
 * its files so that it can be continued later.
 */
export type WorkspaceRequest =
  | { kind: 'runtime', hint: string }
  | { kind: 'session', sessionId: string }
  | { kind: 'fresh' }

export interface WorkspacePlan {
  id: string
  kind: WorkspaceKind
  /** `new` the first time a runtime session is used, `reused` after (the SDK copies it into the artifact) */
  status: 'new' | 'reused'
  /** the execution id of the run: a continued session keeps its id, so its outputs join it */
  executionId: string
  /** the workspace's files, staged into /mnt/data before the explicit inputs */
  files: ResolvedInput[]
  limits: WorkspaceLimits
}

export interface WorkspaceDeps {
  store: FileStore
  workspaces: Workspaces
  settings: SessionSettings
}

/**
 * The runtime session of (tenant, user, hint): a hash, so the hint is never a boundary. Two users sending
 * the same hint get two sessions (spec §9).
 */
export function runtimeSessionId (identity: Identity, hint: string): string {
  return createHash('sha256').update(JSON.stringify([identity.tenant, identity.user ?? '', hint])).digest('base64url').slice(0, 21)
}

/** Where this run works and what its working directory holds before the explicit inputs. */
export async function planWorkspace (request: WorkspaceRequest, identity: Identity, deps: WorkspaceDeps): Promise<WorkspacePlan> {
  const owner = ownerFor(identity)
  const sessionLimits = { maxFiles: deps.settings.sessionMaxFiles, maxBytes: deps.settings.workspaceQuotaBytes }
  if (request.kind === 'runtime') {
    const id = runtimeSessionId(identity, request.hint)
    const existing = await deps.workspaces.get(id, owner)
    if (existing === null) await makeRoomFor(owner, deps)
    return {
      id,
      kind: 'runtime',
      status: existing === null ? 'new' : 'reused',
      executionId: newId(),
      files: existing === null ? [] : await resolveFiles(existing.files, identity, deps.store),
      limits: { maxFiles: deps.settings.workspaceMaxFiles, maxBytes: deps.settings.workspaceQuotaBytes },
    }
  }
  if (request.kind === 'session' && isId(request.sessionId)) {
    // another owner's session, or one that never existed, starts a new session: never a shared one,
    // and never an error that says whether the id exists
    const existing = await deps.workspaces.get(request.sessionId, owner)
    if (existing !== null && existing.kind === 'session') {
      return { id: existing.id, kind: 'session', status: 'reused', executionId: existing.id, files: await resolveFiles(existing.files, identity, deps.store), limits: sessionLimits }
    }
  }
  const executionId = newId()
  return { id: executionId, kind: 'session', status: 'new', executionId, files: [], limits: sessionLimits }
}

/**
 * After a successful run: the injected inputs and the kept outputs join the workspace, files the code
 * deleted leave it. Returns a note when files did not fit its limits. A failed run changes nothing.
 */
export async function updateWorkspace (plan: WorkspacePlan, inputs: ResolvedInput[], outputs: StoredFile[], deleted: string[], identity: Identity, deps: WorkspaceDeps): Promise<string | null> {
  const delta: WorkspaceDelta = { put: fileTable(), remove: deleted }
  for (const input of inputs) delta.put[input.ref.name] = { storageSessionId: input.file.storageSessionId, fileId: input.file.id, size: input.file.size }
  for (const output of outputs) delta.put[output.name] = { storageSessionId: output.storageSessionId, fileId: output.id, size: output.size }
  // an execution that had no files has nothing to continue from: no record of it
  if (plan.kind === 'session' && plan.status === 'new' && Object.keys(delta.put).length === 0) return null
  const dropped = await deps.workspaces.apply(plan.id, plan.kind, ownerFor(identity), delta, plan.limits)
  if (dropped.length === 0) return null
  const place = plan.kind === 'runtime' ? 'the runtime session\'s /mnt/data' : 'this session'
  return `${dropped.length} file(s) were not kept in ${place}: it holds at most ${plan.limits.maxFiles} files and ${formatBytes(plan.limits.maxBytes)}.`
}

/** The workspace's files that still exist and that the caller may use; the rest are left out. */
async function resolveFiles (files: Record<string, { storageSessionId: string, fileId: string }>, identity: Identity, store: FileStore): Promise<ResolvedInput[]> {
  const resolved: ResolvedInput[] = []
  for (const [name, ref] of Object.entries(files)) {
    const file = await store.get(ref.storageSessionId, ref.fileId)
    if (file === null || !canAccess(identity, file)) continue
    resolved.push({ ref: { id: file.id, storageSessionId: file.storageSessionId, name }, file })
  }
  return resolved
}

/** A user holds at most MAX_WORKSPACES_PER_USER runtime sessions: the least recently used one is reset. */
async function makeRoomFor (owner: { tenant: string, user: string }, deps: WorkspaceDeps): Promise<void> {
  const owned = await deps.workspaces.listOwned(owner, 'runtime')
  for (const workspace of owned.slice(0, Math.max(0, owned.length - deps.settings.maxWorkspacesPerUser + 1))) {
    await deps.workspaces.delete(workspace.id)
  }
}

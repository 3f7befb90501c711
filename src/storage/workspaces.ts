import { randomUUID } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { z } from 'zod'
import { replaceDurably } from './durable-fs.ts'
import { FileOwnerSchema, type FileOwner } from './file-store.ts'
import { ID_PATTERN, isId } from './ids.ts'

/**
 * Workspaces: working directories that outlive one execution. A workspace is a manifest (name -> a
 * stored file), on disk, replaced atomically; the bytes are ordinary stored files. Two kinds: a
 * `runtime` workspace (LibreChat's stateful profile: /mnt/data of a runtime session) and a `session`
 * (an execution id named again on /exec: its inputs and outputs are there again).
 */

export const WORKSPACE_KINDS = ['runtime', 'session'] as const
export type WorkspaceKind = (typeof WORKSPACE_KINDS)[number]

const FileRefSchema = z.object({ storageSessionId: z.string().regex(ID_PATTERN), fileId: z.string().regex(ID_PATTERN), size: z.number().int().nonnegative() })
export type WorkspaceFileRef = z.infer<typeof FileRefSchema>

/**
 * A table keyed by file names: an object without a prototype, so every name the code can give a file is
 * an ordinary key. On a plain object `files['__proto__'] = ref` replaces the prototype instead of adding
 * the file, and `files['constructor']` is found where no file is (a `__proto__` file written to a runtime
 * session was lost from it: test/attacks/workspaces.test.ts).
 */
export type FileTable = Record<string, WorkspaceFileRef>
export function fileTable (entries: Iterable<readonly [string, WorkspaceFileRef]> = []): FileTable {
  const table: FileTable = Object.create(null)
  for (const [name, ref] of entries) table[name] = ref
  return table
}

/**
 * The manifest's files, read from the JSON's own entries (JSON.parse keeps a `__proto__` key as its own;
 * z.record leaves it out) into a file table.
 */
const FilesSchema = z.preprocess(
  (raw) => typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? Object.entries(raw) : raw,
  z.array(z.tuple([z.string(), FileRefSchema])).transform((entries) => fileTable(entries))
)

export const ManifestSchema = z.object({
  id: z.string().regex(ID_PATTERN),
  kind: z.enum(WORKSPACE_KINDS),
  owner: FileOwnerSchema,
  /** file name under /mnt/data -> the stored file holding its bytes */
  files: FilesSchema,
  createdAt: z.iso.datetime(),
})
export type Manifest = z.infer<typeof ManifestSchema>
/** A workspace as read: its manifest, and its last use (the manifest file's mtime, so a use is a utimes). */
export type Workspace = z.infer<typeof ManifestSchema> & { lastUsedAt: string }

/** What one run changed: files to (re)point, names to drop. */
export interface WorkspaceDelta {
  /** a file table (`fileTable()`): names are the code's */
  put: FileTable
  remove: string[]
}

/** Limits of one workspace's contents. */
export interface WorkspaceLimits { maxFiles: number, maxBytes: number }

/**
 * The manifests of every workspace under `<dataDir>/workspaces`. Changes to one workspace are applied
 * one at a time (concurrent runs of a runtime session each apply their own delta, never a stale
 * snapshot), and every change is durable before it is acknowledged.
 */
export class WorkspaceStore {
  private readonly locks = new Map<string, Promise<unknown>>()

  private constructor (private readonly dir: string) {}

  static async open (dataDir: string): Promise<WorkspaceStore> {
    const dir = path.join(dataDir, 'workspaces')
    await fs.mkdir(dir, { recursive: true, mode: 0o700 })
    // a crash between write and rename leaves a temporary file: it was never acknowledged
    for (const name of await fs.readdir(dir)) if (name.endsWith('.tmp')) await fs.rm(path.join(dir, name), { force: true })
    return new WorkspaceStore(dir)
  }

  /** The workspace if it exists and belongs to `owner`; another owner's is reported as absent. */
  async get (id: string, owner: FileOwner): Promise<Workspace | null> {
    await this.locks.get(id) // a change still being written is part of it
    const workspace = await this.read(id)
    return workspace !== null && workspace.owner.tenant === owner.tenant && workspace.owner.user === owner.user ? workspace : null
  }

  /**
   * Apply a run's changes (creating the workspace when it does not exist), within `limits`: files beyond
   * them are not kept, newest changes last. Returns the names that did not fit.
   */
  async apply (id: string, kind: WorkspaceKind, owner: FileOwner, delta: WorkspaceDelta, limits: WorkspaceLimits): Promise<string[]> {
    return await this.exclusive(id, async () => {
      const now = new Date().toISOString()
      const current = await this.read(id)
      if (current !== null && (current.owner.tenant !== owner.tenant || current.owner.user !== owner.user)) {
        throw new Error('a workspace id collided across owners') // ids come from the server; never expected
      }
      if (current !== null && isNoChange(current, delta)) {
        // a run that changed nothing only marks the workspace used: no rewrite, no fsync on its path
        await fs.utimes(this.file(id), new Date(), new Date())
        return []
      }
      const { files, dropped } = applyDelta(current?.files ?? fileTable(), delta, limits)
      await this.write({ id, kind, owner, files, createdAt: current?.createdAt ?? now })
      return dropped
    })
  }

  async delete (id: string): Promise<void> {
    await this.exclusive(id, async () => { await fs.rm(this.file(id), { force: true }) })
  }

  /** The runtime workspaces of `owner`, least recently used first. */
  async listOwned (owner: FileOwner, kind: WorkspaceKind): Promise<Workspace[]> {
    const all = await this.readAll()
    return all.filter((workspace) => workspace.kind === kind && workspace.owner.tenant === owner.tenant && workspace.owner.user === owner.user)
      .sort((a, b) => a.lastUsedAt.localeCompare(b.lastUsedAt))
  }

  /** Remove workspaces unused for longer than `ttlMs`; returns how many. */
  async sweep (ttlMs: number, now = Date.now()): Promise<number> {
    let removed = 0
    for (const workspace of await this.readAll()) {
      if (now - Date.parse(workspace.lastUsedAt) <= ttlMs) continue
      await this.delete(workspace.id)
      removed++
    }
    return removed
  }

  private async readAll (): Promise<Workspace[]> {
    const names = (await fs.readdir(this.dir)).filter((name) => name.endsWith('.json'))
    const workspaces = await Promise.all(names.map((name) => this.read(name.slice(0, -'.json'.length))))
    return workspaces.filter((workspace): workspace is Workspace => workspace !== null)
  }

  private async read (id: string): Promise<Workspace | null> {
    if (!isId(id)) return null
    let text: string
    let usedMs: number
    try {
      [text, usedMs] = await Promise.all([fs.readFile(this.file(id), 'utf8'), fs.stat(this.file(id)).then((stat) => stat.mtimeMs)])
    } catch {
      return null
    }
    return parseManifest(text, id, usedMs)
  }

  private async write (workspace: z.infer<typeof ManifestSchema>): Promise<void> {
    await replaceDurably(this.file(workspace.id), JSON.stringify(workspace), path.join(this.dir, `${randomUUID()}.tmp`))
  }

  private file (id: string): string {
    return path.join(this.dir, `${id}.json`)
  }

  /** Changes to one workspace, one at a time. */
  private async exclusive<T> (id: string, change: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve()
    const next = previous.then(change, change)
    const settled = next.catch(() => {})
    this.locks.set(id, settled)
    settled.then(() => { if (this.locks.get(id) === settled) this.locks.delete(id) }, () => {})
    return await next
  }
}

/** The workspaces as the execution pipeline uses them: this store (one process) or the replicas' (`cluster/`). */
export type Workspaces = Pick<WorkspaceStore, 'get' | 'apply' | 'delete' | 'listOwned' | 'sweep'>

/** The manifest in `text`, last used at `usedMs`, if it is well formed and is workspace `id`'s; else null. */
export function parseManifest (text: string, id: string, usedMs: number): Workspace | null {
  try {
    const parsed = ManifestSchema.safeParse(JSON.parse(text))
    return parsed.success && parsed.data.id === id ? { ...parsed.data, lastUsedAt: new Date(usedMs).toISOString() } : null
  } catch {
    return null
  }
}

/** A run's changes applied to `current` within `limits`: files beyond them are not kept, newest changes last. */
export function applyDelta (current: Manifest['files'], delta: WorkspaceDelta, limits: WorkspaceLimits): { files: Manifest['files'], dropped: string[] } {
  const files = fileTable(Object.entries(current))
  for (const name of delta.remove) delete files[name]
  const dropped: string[] = []
  for (const [name, ref] of Object.entries(delta.put)) {
    const others = Object.entries(files).filter(([other]) => other !== name)
    const bytes = others.reduce((sum, [, file]) => sum + file.size, 0) + ref.size
    if (others.length + 1 > limits.maxFiles || bytes > limits.maxBytes) {
      dropped.push(name)
      delete files[name]
      continue
    }
    files[name] = ref
  }
  return { files, dropped }
}

export function isNoChange (current: Workspace, delta: WorkspaceDelta): boolean {
  return delta.remove.every((name) => current.files[name] === undefined) &&
    Object.entries(delta.put).every(([name, ref]) => {
      const existing = current.files[name]
      return existing !== undefined && existing.fileId === ref.fileId && existing.storageSessionId === ref.storageSessionId
    })
}

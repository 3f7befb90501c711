import { createHash } from 'node:crypto'
import { realpathSync, statSync } from 'node:fs'
import type { Identity } from '../auth/identity.ts'
import type { Artifact, Program } from '../pool/run.ts'

/** What the cache counts, for /metrics. */
export interface CompileCacheStats { hits: number, misses: number, stores: number, evictions: number, entries: number, bytes: number }

interface Entry { artifacts: readonly Artifact[], bytes: number, digest: string }

/**
 * The build products of compiled programs, kept so that the same source compiled the same way by the same
 * owner runs without its compile (SECURITY.md "The compile cache" argues the design):
 * - the key is a SHA-256 over the owner (tenant and user: an entry serves only the owner whose run
 *   produced it), the language, the source, every build step's argv and environment, and the toolchain's
 *   executables as they are on disk now (path, inode, size, mtime: an upgrade is a different key);
 * - entries live in the server's memory, which no jail can reach, as copies taken when the run that
 *   produced them handed them over; each carries the digest of its bytes, checked before it is used;
 * - bounded by `maxBytes`, least recently used first out; an entry above a quarter of it is not kept.
 */
export class CompileCache {
  private readonly entries = new Map<string, Entry>()
  private bytes = 0
  private counts = { hits: 0, misses: 0, stores: 0, evictions: 0 }

  constructor (private readonly maxBytes: number) {}

  get enabled (): boolean { return this.maxBytes > 0 }

  /** The artifacts kept under `key`, or null (counted as a miss). */
  lookup (key: string): readonly Artifact[] | null {
    const entry = this.entries.get(key)
    if (entry === undefined || digestOf(entry.artifacts) !== entry.digest) {
      if (entry !== undefined) this.drop(key, entry)
      this.counts.misses++
      return null
    }
    // most recently used last: Map keeps insertion order
    this.entries.delete(key)
    this.entries.set(key, entry)
    this.counts.hits++
    return entry.artifacts
  }

  /** Keep what a run's build produced under `key`, evicting the least recently used entries to fit. */
  store (key: string, artifacts: readonly Artifact[]): void {
    const bytes = artifacts.reduce((sum, artifact) => sum + artifact.bytes.length + artifact.name.length, 0)
    if (!this.enabled || bytes > this.maxBytes / 4) return
    const previous = this.entries.get(key)
    if (previous !== undefined) this.drop(key, previous)
    // copies: nothing the caller still holds can change an entry
    const kept = Object.freeze(artifacts.map((artifact) => Object.freeze({ name: artifact.name, bytes: Buffer.from(artifact.bytes) })))
    this.entries.set(key, { artifacts: kept, bytes, digest: digestOf(kept) })
    this.bytes += bytes
    this.counts.stores++
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break
      this.drop(oldest, entry)
      this.counts.evictions++
    }
  }

  stats (): CompileCacheStats {
    return { ...this.counts, entries: this.entries.size, bytes: this.bytes }
  }

  private drop (key: string, entry: Entry): void {
    this.entries.delete(key)
    this.bytes -= entry.bytes
  }
}

/**
 * A program whose build reads something other than its source and the read-only system may compile
 * differently from one run to the next: the time (`__DATE__`), or a file of the run through an include
 * the source folder cannot satisfy (a quoted or computed `#include`, an absolute or `..` one, Fortran's
 * `include`, Rust's `include_str!`): such code is compiled every time. This only keeps answers fresh
 * for their owner; the owner in the key, not this pattern, is what keeps builds from crossing owners.
 */
const READS_BEYOND_SOURCE = new RegExp([
  String.raw`__(?:DATE|TIME|TIMESTAMP)__`,
  String.raw`include_(?:str|bytes)!`,
  String.raw`^\s*#\s*(?:include|include_next|import)\s*(?:"|[A-Za-z_]|<\s*\/|<[^>\n]*\.\.)`,
  String.raw`^\s*include\s*['"]`,
].join('|'), 'im')

/**
 * The cache key of a program's build, or null when the build may not be cached: the program has no
 * artifacts (an interpreted language), there are files in /mnt/data (the build could read them), or the
 * code reads beyond its source.
 */
export function compileKey (identity: Identity, languageId: string, program: Program, code: string, inputCount: number): string | null {
  if (program.runner !== 'steps' || program.artifacts === undefined || program.artifacts.length === 0) return null
  if (program.steps.length < 2 || inputCount > 0 || READS_BEYOND_SOURCE.test(code)) return null
  const build = program.steps.slice(0, -1)
  const toolchain = toolchainOf(build.map((step) => step.argv[0] ?? ''))
  if (toolchain === null) return null
  const hash = createHash('sha256')
  hash.update(JSON.stringify({
    v: 1,
    tenant: identity.tenant,
    user: identity.user,
    language: languageId,
    sourceFile: program.sourceFile,
    env: program.env ?? {},
    // the time limit changes whether a build finishes, never what it makes
    build: build.map((step) => ({ name: step.name, argv: step.argv, env: step.env ?? {}, stdoutToStderr: step.stdoutToStderr === true })),
    artifacts: program.artifacts,
    toolchain,
  }))
  hash.update('\0')
  hash.update(code)
  return hash.digest('hex')
}

/** The build's executables as they are on disk; null when one is missing (the build will say so). */
function toolchainOf (executables: string[]): string[] | null {
  try {
    return executables.map((file) => {
      const real = realpathSync(file)
      const stat = statSync(real, { bigint: true })
      return `${real}:${stat.ino}:${stat.size}:${stat.mtimeNs}`
    })
  } catch {
    return null
  }
}

function digestOf (artifacts: readonly Artifact[]): string {
  const hash = createHash('sha256')
  for (const artifact of artifacts) hash.update(`${artifact.name}\0${artifact.bytes.length}\0`).update(artifact.bytes)
  return hash.digest('hex')
}

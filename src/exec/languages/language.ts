import { accessSync, constants } from 'node:fs'
import type { ExecutionLimits } from '../../config.ts'
import type { Program } from '../../pool/run.ts'

/** What a descriptor may look at to build the program of one execution. */
export interface ProgramRequest {
  code: string
  /**
   * The execution's limits. The jail shows no /sys/fs/cgroup, so a runtime that sizes itself from the
   * machine (the JVM's heap, Go's GOMAXPROCS) would see the host's cores and all its memory.
   */
  limits: Pick<ExecutionLimits, 'memoryBytes' | 'cpus' | 'compileTimeoutMs'>
}

/**
 * One language Warden runs: the `lang` values that name it on the wire, how a worker runs its code, and
 * what the host must have installed. Adding a language is one such file in this folder (exporting the
 * descriptor as default), plus its runtime in the Dockerfile and .ci/run; index.ts finds it. A runtime
 * that needs files of /etc adds them to the one mount table (src/jail/mounts.ts and nsjail.cfg).
 */
export interface LanguageDescriptor {
  /** Warden's own name: logs, metrics, /health */
  id: string
  /** `lang` values that select it, lower case (matching ignores case and surrounding space) */
  aliases: readonly string[]
  /**
   * The same program for every execution, or one built from the code and limits (Java's file name, the
   * JVM's heap). With argv steps, every step before the last builds the program (a compile): it gets
   * COMPILE_TIMEOUT_MS unless it names its own `timeoutMs`, and its failure is a `compile_error`.
   */
  program: Program | ((request: ProgramRequest) => Program)
  /** executables the language needs inside the jail (the jail sees the host's /usr) */
  requires: readonly string[]
  /** what provides them, for the message when they are missing (Debian packages, or an npm package) */
  install: string
}

/** The first of `candidates` that is an executable file, else the first one (named when it is missing). */
export function firstInstalled (candidates: readonly [string, ...string[]]): string {
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return candidates[0]
}

/**
 * The Node.js inside jails: the one under /usr/local (the official Node images and nodesource's
 * tarballs put Warden's own Node 20 there) before Debian's /usr/bin/node, as PATH finds them in a jail.
 */
export const NODE = firstInstalled(['/usr/local/bin/node', '/usr/bin/node'])

/** `-XX:MaxRAM` and `-XX:ActiveProcessorCount` from the execution's limits (the JVM cannot see its cgroup). */
export function jvmLimits (limits: ProgramRequest['limits']): string[] {
  return [`-XX:MaxRAM=${limits.memoryBytes}`, `-XX:ActiveProcessorCount=${Math.max(1, Math.ceil(limits.cpus))}`]
}

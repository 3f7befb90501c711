import { ownerFor, type Identity } from '../auth/identity.ts'
import type { ExecutionLimits } from '../config.ts'
import type { OutputFile, OutputSink } from '../pool/run.ts'
import { FileTooLargeError, type FileStore, type FileWriter, type StoredFile } from '../storage/file-store.ts'
import { validateFileName } from '../storage/file-names.ts'

interface PendingOutput {
  name: string
  writer: FileWriter
  complete: boolean
  overLimit: boolean
}

/**
 * Receives the files a worker sends back and writes them to the store as they stream, enforcing the
 * caps again on this side (the worker is as untrusted as the code it ran). Nothing becomes visible
 * until `keep()`; `discard()` leaves nothing behind.
 */
export class OutputCollector implements OutputSink {
  private readonly pending: PendingOutput[] = []
  private totalBytes = 0
  private rejectedNames = 0
  private overLimit = 0

  constructor (
    private readonly store: FileStore,
    private readonly storageSessionId: string,
    private readonly owner: Identity,
    private readonly limits: Pick<ExecutionLimits, 'maxOutputFiles' | 'maxOutputFileBytes' | 'maxOutputTotalBytes'>
  ) {}

  get count (): number { return this.pending.length }

  async open (name: string): Promise<OutputFile | null> {
    const checked = validateFileName(name)
    if (!checked.ok) {
      this.rejectedNames++
      return null
    }
    if (this.pending.length >= this.limits.maxOutputFiles) {
      this.overLimit++
      return null
    }
    const writer = await this.store.create(
      { storageSessionId: this.storageSessionId, name: checked.name, kind: 'output', owner: ownerFor(this.owner) },
      this.limits.maxOutputFileBytes)
    const output: PendingOutput = { name: checked.name, writer, complete: false, overLimit: false }
    this.pending.push(output)
    return {
      write: async (chunk) => {
        if (output.overLimit) return
        this.totalBytes += chunk.length
        if (this.totalBytes > this.limits.maxOutputTotalBytes) return await this.dropOverLimit(output)
        try {
          await output.writer.write(chunk)
        } catch (error) {
          if (!(error instanceof FileTooLargeError)) throw error
          await this.dropOverLimit(output)
        }
      },
      close: async (sizeReported) => {
        output.complete = !output.overLimit && sizeReported === output.writer.bytesWritten
      },
      abort: async () => { await output.writer.abort() },
    }
  }

  /** Commit every complete output, in the order the worker sent them. */
  async keep (): Promise<StoredFile[]> {
    const kept: StoredFile[] = []
    for (const output of this.pending) {
      if (output.complete) kept.push(await output.writer.commit())
      else await output.writer.abort()
    }
    return kept
  }

  async discard (): Promise<void> {
    await Promise.all(this.pending.map((output) => output.writer.abort()))
  }

  /** One-line notes for stderr about outputs this side refused. */
  notes (): string[] {
    const notes: string[] = []
    if (this.overLimit > 0) {
      notes.push(`${this.overLimit} output file(s) were not kept: the limits are ${this.limits.maxOutputFiles} files, ` +
        `${this.limits.maxOutputFileBytes} bytes per file and ${this.limits.maxOutputTotalBytes} bytes in all`)
    }
    if (this.rejectedNames > 0) notes.push(`${this.rejectedNames} output file(s) with names that are not allowed were not kept`)
    return notes
  }

  private async dropOverLimit (output: PendingOutput): Promise<void> {
    if (output.overLimit) return
    output.overLimit = true
    this.overLimit++
    await output.writer.abort()
  }
}

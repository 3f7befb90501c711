import { z } from 'zod'

/**
 * The zygote's control channel (its fd 3): JSON lines, one message each way per line. Requests go from the
 * server to the zygote, events back; sandbox/README.md is the reference, sandbox/zygote.py the other half.
 */

export type ZygoteRequest =
  | { op: 'spawn', slot: number, token: string, cgroup_procs: string[] }
  | { op: 'kill', slot: number }
  | { op: 'interrupt', slot: number }

const slot = z.number().int().nonnegative()
export const ZygoteEventSchema = z.discriminatedUnion('ev', [
  z.object({ ev: z.literal('ready'), pid: z.number(), python: z.string(), preloaded: z.array(z.string()) }),
  z.object({ ev: z.literal('spawned'), slot, pid: z.number() }),
  z.object({ ev: z.literal('spawn_failed'), slot, message: z.string() }),
  z.object({ ev: z.literal('exited'), slot, code: z.number().nullable(), signal: z.number().nullable() }),
  z.object({ ev: z.literal('error'), message: z.string() }),
])
export type ZygoteEvent = z.infer<typeof ZygoteEventSchema>

export function encodeRequest (request: ZygoteRequest | Record<string, unknown>): string {
  return `${JSON.stringify(request)}\n`
}

/** Splits the channel's text into lines and parses each; a line that is not a known event is reported, not thrown. */
export class ZygoteEventDecoder {
  private buffer = ''

  push (text: string): Array<ZygoteEvent | { ev: 'unreadable', line: string }> {
    this.buffer += text
    const events: Array<ZygoteEvent | { ev: 'unreadable', line: string }> = []
    for (let newline = this.buffer.indexOf('\n'); newline >= 0; newline = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, newline)
      this.buffer = this.buffer.slice(newline + 1)
      if (line.trim() === '') continue
      let parsed: unknown
      try {
        parsed = JSON.parse(line)
      } catch {
        parsed = null
      }
      const event = ZygoteEventSchema.safeParse(parsed)
      events.push(event.success ? event.data : { ev: 'unreadable', line: line.slice(0, 200) })
    }
    return events
  }
}

/**
 * A single-consumer async queue that counts the bytes it holds and asks its producer to pause above a
 * high-water mark and resume below a low one: a slow consumer (a WebSocket, a client reading a stream)
 * slows the worker down instead of growing the server's memory.
 */
export class EventQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = []
  private bytes = 0
  private paused = false
  private closed = false
  private wake: (() => void) | null = null

  constructor (
    private readonly sizeOf: (item: T) => number,
    private readonly onPressure: (paused: boolean) => void,
    private readonly highWaterBytes = 1 << 20,
    private readonly lowWaterBytes = 256 << 10
  ) {}

  get isClosed (): boolean { return this.closed }

  push (item: T): void {
    if (this.closed) return
    this.items.push(item)
    this.bytes += this.sizeOf(item)
    if (!this.paused && this.bytes > this.highWaterBytes) {
      this.paused = true
      this.onPressure(true)
    }
    this.wakeUp()
  }

  /** No more items: the consumer sees the ones queued, then the end. */
  close (): void {
    this.closed = true
    this.wakeUp()
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<T> {
    for (;;) {
      const item = this.items.shift()
      if (item !== undefined) {
        this.bytes -= this.sizeOf(item)
        if (this.paused && this.bytes < this.lowWaterBytes) {
          this.paused = false
          this.onPressure(false)
        }
        yield item
        continue
      }
      if (this.closed) return
      await new Promise<void>((resolve) => { this.wake = resolve })
    }
  }

  private wakeUp (): void {
    const wake = this.wake
    this.wake = null
    wake?.()
  }
}

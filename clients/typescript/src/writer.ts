/**
 * The batching writer every client uses for its buffered calls (the QuestDB `Sender` /
 * influxdb-client-js `WriteApi` model): a bounded queue, auto-flush on rows, bytes and
 * interval, retries with full-jitter back-off, an error listener that never blocks it.
 *
 * Order of a send: take the queue → split into batches (≤ `auto_flush_rows` items and
 * ≤ `max_batch_bytes`) → send each with at most `concurrency` batches in flight → on a
 * retriable error wait `random(0, min(max, initial·2ⁿ))` or the server's advice if
 * longer, within `retry_timeout_ms` and `max_retries` → acknowledged (`sent`) or given to
 * the error listeners (`failed`).
 */
import { BufferOverflowError, ServerUnavailableError, ThemisError, WriteError } from "./errors.js";
import type { ResolvedConfig } from "./config.js";
import type { ErrorListener, WriterCounters } from "./types.js";

export interface WriterSettings {
  autoFlush: boolean;
  autoFlushRows: number;
  autoFlushBytes: number;
  autoFlushIntervalMs: number;
  maxBufferRows: number;
  maxBufferBytes: number;
  maxRetries: number;
  retryTimeoutMs: number;
  retryInitialBackoffMs: number;
  retryMaxBackoffMs: number;
}

export interface WriterHooks<T> {
  /** Send one batch; resolves once the server acknowledged it. */
  send(items: T[]): Promise<void>;
  /** The largest batch, in (estimated) bytes. */
  maxBatchBytes(): number;
  /** Split taken items into batches; the default cuts by rows and bytes only. */
  split?(items: T[], sizes: number[], maxRows: number, maxBytes: number): T[][];
  /** Batches in flight at once (1 keeps the order of every write). */
  concurrency: number;
  /** Clock and randomness, injectable for tests. */
  random?: () => number;
}

export function settingsOf(c: ResolvedConfig): WriterSettings {
  return {
    autoFlush: c.autoFlush, autoFlushRows: c.autoFlushRows, autoFlushBytes: c.autoFlushBytes,
    autoFlushIntervalMs: c.autoFlushIntervalMs, maxBufferRows: c.maxBufferRows, maxBufferBytes: c.maxBufferBytes,
    maxRetries: c.maxRetries, retryTimeoutMs: c.retryTimeoutMs, retryInitialBackoffMs: c.retryInitialBackoffMs,
    retryMaxBackoffMs: c.retryMaxBackoffMs,
  };
}

/** Cut `items` into runs of at most `maxRows` items and `maxBytes` estimated bytes. */
export function splitByRowsAndBytes<T>(items: T[], sizes: number[], maxRows: number, maxBytes: number): T[][] {
  const out: T[][] = [];
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < items.length; i++) {
    const s = sizes[i]!;
    if (i > start && (i - start >= maxRows || bytes + s > maxBytes)) {
      out.push(items.slice(start, i));
      start = i;
      bytes = 0;
    }
    bytes += s;
  }
  if (start < items.length) out.push(start === 0 ? items : items.slice(start));
  return out;
}

/** A settled send: the items that were finally not written, and why. */
interface Outcome<T> { failed: T[]; error: Error | undefined }

export class BatchWriter<T> {
  private queue: T[] = [];
  private sizes: number[] = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<Promise<Outcome<T>>>();
  private active = 0;
  private readonly slotWaiters: Array<() => void> = [];
  private readonly listeners = new Set<ErrorListener<T>>();
  private closed = false;
  /** Failures since the last flush(), which rejects with them. */
  private unflushedFailures: T[] = [];
  private lastError: Error | undefined;
  private readonly random: () => number;
  readonly counters: WriterCounters = { queued: 0, sent: 0, retried: 0, failed: 0 };

  constructor(private readonly s: WriterSettings, private readonly hooks: WriterHooks<T>) {
    this.random = hooks.random ?? Math.random;
  }

  /** Items queued and not yet taken by a send. */
  get pending(): number { return this.queue.length; }

  onError(listener: ErrorListener<T>): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** Queue one item of `size` estimated bytes, or throw at once; never waits. */
  add(item: T, size: number): void {
    this.admit(1, size);
    this.queue.push(item);
    this.sizes.push(size);
    this.queuedBytes += size;
    this.counters.queued++;
    this.afterAdd();
  }

  /** Queue all items or none. */
  addMany(items: readonly T[], sizes: readonly number[]): void {
    let bytes = 0;
    for (const s of sizes) bytes += s;
    this.admit(items.length, bytes);
    for (let i = 0; i < items.length; i++) { this.queue.push(items[i]!); this.sizes.push(sizes[i]!); }
    this.queuedBytes += bytes;
    this.counters.queued += items.length;
    this.afterAdd();
  }

  private admit(rows: number, bytes: number): void {
    if (this.closed) throw new ThemisError("the client is closed; buffered calls are refused after close()");
    if (this.queue.length + rows > this.s.maxBufferRows) {
      throw new BufferOverflowError(
        `the client's queue holds ${this.queue.length} items, max_buffer_rows=${this.s.maxBufferRows}: flush() more often or raise max_buffer_rows`,
        this.s.maxBufferRows);
    }
    if (this.queuedBytes + bytes > this.s.maxBufferBytes) {
      throw new BufferOverflowError(
        `the client's queue holds ${this.queuedBytes} bytes, max_buffer_bytes=${this.s.maxBufferBytes}: flush() more often or raise max_buffer_bytes`,
        this.s.maxBufferBytes);
    }
  }

  private afterAdd(): void {
    if (!this.s.autoFlush) return;
    if (this.queue.length >= this.s.autoFlushRows || this.queuedBytes >= this.s.autoFlushBytes) {
      this.drain();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => { this.timer = undefined; this.drain(); }, this.s.autoFlushIntervalMs);
      this.timer.unref(); // never keeps the process alive
    }
  }

  /** Take everything queued and start sending it; returns the sends started. */
  private drain(): Array<Promise<Outcome<T>>> {
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined; }
    if (this.queue.length === 0) return [];
    const items = this.queue;
    const sizes = this.sizes;
    this.queue = [];
    this.sizes = [];
    this.queuedBytes = 0;
    const maxBytes = Math.max(1, this.hooks.maxBatchBytes());
    const split = this.hooks.split ?? splitByRowsAndBytes;
    const started: Array<Promise<Outcome<T>>> = [];
    for (const batch of split(items, sizes, this.s.autoFlushRows, maxBytes)) {
      const p = this.sendBatch(batch);
      this.inFlight.add(p);
      void p.finally(() => this.inFlight.delete(p));
      started.push(p);
    }
    return started;
  }

  private async slot(): Promise<void> {
    while (this.active >= this.hooks.concurrency) await new Promise<void>((r) => this.slotWaiters.push(r));
    this.active++;
  }

  private release(): void {
    this.active--;
    this.slotWaiters.shift()?.();
  }

  private async sendBatch(batch: T[]): Promise<Outcome<T>> {
    // With a free slot the send starts in this very call (no await before it), so the
    // first batches are on the wire while the caller is still queueing the next ones.
    if (this.active < this.hooks.concurrency) this.active++;
    else await this.slot();
    try {
      const start = Date.now();
      for (let attempt = 0; ; attempt++) {
        let error: Error;
        try {
          await this.hooks.send(batch);
          this.counters.sent += batch.length;
          return { failed: [], error: undefined };
        } catch (e) {
          error = e instanceof Error ? e : new ServerUnavailableError(String(e));
        }
        const retriable = error instanceof ThemisError ? error.retriable : false;
        if (!retriable || attempt >= this.s.maxRetries) return this.give(batch, error);
        const ceiling = Math.min(this.s.retryMaxBackoffMs, this.s.retryInitialBackoffMs * 2 ** attempt);
        let wait = this.random() * ceiling;
        const advice = error instanceof ThemisError ? error.retryAfterMs : 0;
        if (advice > wait) wait = advice;
        if (Date.now() + wait - start > this.s.retryTimeoutMs) return this.give(batch, error);
        this.counters.retried += batch.length;
        await new Promise((r) => setTimeout(r, wait));
      }
    } finally {
      this.release();
    }
  }

  /** Count the batch as failed and tell the listeners, outside of the writer's own work. */
  private give(batch: T[], error: Error): Outcome<T> {
    this.counters.failed += batch.length;
    for (const item of batch) this.unflushedFailures.push(item);
    this.lastError = error;
    for (const listener of this.listeners) {
      queueMicrotask(() => {
        try {
          const r: unknown = listener(error, batch);
          if (r instanceof Promise) r.catch(() => undefined);
        } catch { /* a listener's exception never stops the writer */ }
      });
    }
    return { failed: batch, error };
  }

  /**
   * Send everything queued; resolves once all of it (and every send already under way) is
   * acknowledged, or rejects with a WriteError holding what was finally not written since
   * the previous flush() (those items went to the error listeners too).
   */
  async flush(): Promise<void> {
    this.drain();
    await Promise.all([...this.inFlight]);
    // Everything that failed since the last flush: sends of this one and earlier background ones.
    const failed = this.unflushedFailures;
    const cause = this.lastError;
    this.unflushedFailures = [];
    this.lastError = undefined;
    if (failed.length) {
      throw new WriteError<T>(`${failed.length} items were not written: ${cause?.message ?? "unknown error"}`, failed, cause);
    }
  }

  /** Flush, then refuse further items; closing twice is harmless. */
  async close(): Promise<void> {
    if (this.closed) { await Promise.all([...this.inFlight]); return; }
    try {
      await this.flush();
    } finally {
      this.closed = true;
    }
  }
}

package themis

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// WriterStats are a writer's counters (the documented queued, sent, retried,
// failed) plus the errors dropped because nobody read Errors().
type WriterStats struct {
	Queued        int64 // items accepted by Write
	Sent          int64 // items acknowledged by the server
	Retried       int64 // batch retries
	Failed        int64 // items finally not written
	DroppedErrors int64 // errors that found Errors() full
	Pending       int   // items queued or in flight now
}

// writer is the non-blocking batching writer behind every buffered call.
//
// Write appends under a mutex and returns; a single loop goroutine cuts batches
// (rows, bytes, interval, or a Flush) and hands each to a sender goroutine, at
// most MaxInFlightBatches at once. Each item gets a sequence number; the
// watermark is the first sequence number not yet finished (acknowledged or
// finally failed), so Flush waits for the watermark to pass what was queued
// before it, retries included.
type writer[T any] struct {
	cfg  Config
	send func(context.Context, []T) error
	size func(T) int

	mu        sync.Mutex
	chunks    [][]T // the queue, in chunks of at most auto_flush_rows items
	qlen      int   // items in chunks
	qbytes    int
	oldest    time.Time
	nextSeq   uint64 // sequence number of the next Write
	queueSeq  uint64 // sequence number of queue[0]
	inflight  map[uint64]int
	inflightN int // items in flight (the sum of inflight)
	changed   chan struct{}
	forced    int // pending Flush calls
	closed    bool
	failures  []error
	failCount int

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	slot chan struct{}
	errs chan error

	queued, sent, retried, failed, dropped atomic.Int64
}

func newWriter[T any](cfg Config, send func(context.Context, []T) error, size func(T) int) *writer[T] {
	w := &writer[T]{
		cfg: cfg, send: send, size: size,
		inflight: map[uint64]int{}, changed: make(chan struct{}),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		slot: make(chan struct{}, cfg.MaxInFlightBatches), errs: make(chan error, cfg.ErrorChannelSize),
	}
	go w.loop()
	return w
}

// Write queues item; it never blocks on the network or on an unread error
// channel. A full queue fails at once with *BufferOverflowError (not queued).
func (w *writer[T]) Write(item T) error {
	w.mu.Lock()
	n := w.size(item)
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if w.cfg.MaxBufferRows > 0 && w.pendingLocked() >= w.cfg.MaxBufferRows {
		w.mu.Unlock()
		return &BufferOverflowError{BufferSize: w.cfg.MaxBufferRows, Limit: "max_buffer_rows"}
	}
	if w.cfg.MaxBufferBytes > 0 && w.qbytes+n > w.cfg.MaxBufferBytes {
		w.mu.Unlock()
		return &BufferOverflowError{BufferSize: w.cfg.MaxBufferBytes, Limit: "max_buffer_bytes"}
	}
	if w.qlen == 0 {
		w.oldest = time.Now()
	}
	// A chunked queue: no copying as it grows, and a batch is a chunk's prefix.
	last := len(w.chunks) - 1
	if last < 0 || len(w.chunks[last]) == cap(w.chunks[last]) {
		w.chunks = append(w.chunks, make([]T, 0, w.chunkCap()))
		last++
	}
	w.chunks[last] = append(w.chunks[last], item)
	w.qlen++
	w.qbytes += n
	w.nextSeq++
	// The first item of an empty queue wakes the loop too, to arm the interval timer.
	wake := w.qlen == 1 || w.cfg.AutoFlush && (w.qlen >= w.cfg.AutoFlushRows || w.qbytes >= w.cfg.AutoFlushBytes)
	w.mu.Unlock()
	w.queued.Add(1)
	if wake {
		w.poke()
	}
	return nil
}

func (w *writer[T]) chunkCap() int {
	return max(1, min(w.cfg.AutoFlushRows, 1<<16))
}

func (w *writer[T]) pendingLocked() int {
	return w.qlen + w.inflightN
}

func (w *writer[T]) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *writer[T]) watermarkLocked() uint64 {
	m := w.queueSeq
	for s := range w.inflight {
		if s < m {
			m = s
		}
	}
	return m
}

func (w *writer[T]) broadcastLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *writer[T]) loop() {
	defer close(w.done)
	var timer *time.Timer
	for {
		var tick <-chan time.Time
		w.mu.Lock()
		if w.cfg.AutoFlush && w.qlen > 0 && w.cfg.AutoFlushInterval > 0 {
			wait := time.Until(w.oldest.Add(w.cfg.AutoFlushInterval))
			if wait < 0 {
				wait = 0
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tick = timer.C
		}
		w.mu.Unlock()
		select {
		case <-w.kick:
		case <-tick:
		case <-w.stop:
			w.cutAll(true)
			return
		}
		if timer != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		w.cutAll(false)
	}
}

// cutAll sends batches while the queue meets a flush condition.
func (w *writer[T]) cutAll(force bool) {
	for {
		w.mu.Lock()
		if !w.dueLocked(force) {
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.slot <- struct{}{} // at most MaxInFlightBatches batches out
		w.mu.Lock()
		batch, seq := w.cutLocked()
		w.mu.Unlock()
		if len(batch) == 0 {
			<-w.slot
			continue
		}
		go w.sendBatch(batch, seq)
	}
}

// dueLocked: a batch should go now.
func (w *writer[T]) dueLocked(force bool) bool {
	return w.qlen > 0 && (force || w.forced > 0 || w.closed ||
		(w.cfg.AutoFlush && (w.qlen >= w.cfg.AutoFlushRows || w.qbytes >= w.cfg.AutoFlushBytes ||
			time.Since(w.oldest) >= w.cfg.AutoFlushInterval)))
}

// cutLocked takes the head of the queue: at most auto_flush_rows items and
// max_batch_bytes bytes (at least one item).
func (w *writer[T]) cutLocked() ([]T, uint64) {
	if w.qlen == 0 {
		return nil, 0
	}
	head := w.chunks[0]
	n, bytes := 0, 0
	for n < len(head) {
		s := w.size(head[n])
		if n > 0 && w.cfg.MaxBatchBytes > 0 && bytes+s > w.cfg.MaxBatchBytes {
			break
		}
		bytes += s
		n++
	}
	// The batch keeps the head of the chunk's array; the chunk goes on after it
	// (appends never write into the batch's part).
	batch := head[:n:n]
	if rest := head[n:]; len(rest) > 0 || cap(rest) > 0 && len(w.chunks) == 1 {
		w.chunks[0] = rest
	} else {
		w.chunks[0] = nil
		w.chunks = w.chunks[1:]
	}
	w.qlen -= n
	w.qbytes -= bytes
	seq := w.queueSeq
	w.queueSeq += uint64(n)
	w.inflight[seq] = n
	w.inflightN += n
	w.oldest = time.Now()
	return batch, seq
}

// sendBatch sends batch, then, keeping its slot, the next batch that is due
// (no round trip through the loop goroutine between an answer and the next send).
func (w *writer[T]) sendBatch(batch []T, seq uint64) {
	for {
		err := w.sendWithRetry(batch)
		w.mu.Lock()
		delete(w.inflight, seq)
		w.inflightN -= len(batch)
		done := len(batch)
		// The counters change before the broadcast, so a Flush that returns sees them.
		if err != nil {
			w.failCount += done
			if len(w.failures) < 16 {
				w.failures = append(w.failures, err)
			}
			w.failed.Add(int64(done))
		} else {
			w.sent.Add(int64(done))
		}
		w.broadcastLocked()
		batch = nil
		if w.dueLocked(false) {
			batch, seq = w.cutLocked()
		}
		w.mu.Unlock()
		if err != nil {
			w.report(&WriteError{Failed: done, Cause: err})
		}
		if len(batch) == 0 {
			break
		}
	}
	<-w.slot
	w.poke() // a freed slot may let the next batch go
}

// sendWithRetry: max_retries retries of retriable errors within
// retry_timeout_ms, full-jitter exponential back-off from
// retry_initial_backoff_ms to retry_max_backoff_ms, or the server's
// Retry-After / retry_after_ms when longer.
func (w *writer[T]) sendWithRetry(batch []T) error {
	deadline := time.Now().Add(w.cfg.RetryTimeout)
	backoff := w.cfg.RetryInitialBackoff
	for attempt := 0; ; attempt++ {
		err := w.send(context.Background(), batch)
		if err == nil || !IsRetriable(err) || attempt >= w.cfg.MaxRetries {
			return err
		}
		wait := time.Duration(0)
		if backoff > 0 {
			wait = time.Duration(rand.Int64N(int64(backoff) + 1))
		}
		if ra := retryAfter(err); ra > wait {
			wait = ra
		}
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		w.retried.Add(1)
		time.Sleep(wait)
		backoff *= 2
		if backoff > w.cfg.RetryMaxBackoff {
			backoff = w.cfg.RetryMaxBackoff
		}
	}
}

// report hands err to the handler (own goroutine) and the channel (dropped and
// counted when full).
func (w *writer[T]) report(err error) {
	if h := w.cfg.ErrorHandler; h != nil {
		go h(err)
	}
	select {
	case w.errs <- err:
	default:
		w.dropped.Add(1)
	}
}

// Flush sends what is queued and waits until everything queued before the call
// is acknowledged or finally failed (retries included). It returns a
// *WriteError for the items that failed since the previous Flush.
func (w *writer[T]) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.nextSeq
	w.forced++
	w.mu.Unlock()
	w.poke()
	defer func() {
		w.mu.Lock()
		w.forced--
		w.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		if w.watermarkLocked() >= target && (w.queueSeq >= target) {
			n, errs := w.failCount, w.failures
			w.failCount, w.failures = 0, nil
			w.mu.Unlock()
			if n > 0 {
				return &WriteError{Failed: n, Cause: errs[len(errs)-1]}
			}
			return nil
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
			w.poke()
		}
	}
}

// Close flushes, then stops the writer. Closing twice is harmless.
func (w *writer[T]) Close(ctx context.Context) error {
	err := w.Flush(ctx)
	w.mu.Lock()
	already := w.closed
	w.closed = true
	w.mu.Unlock()
	if !already {
		close(w.stop)
		<-w.done
	}
	return err
}

// Errors is the channel of WriteErrors; when nobody reads it, errors that find it
// full are dropped and counted in WriterStats.DroppedErrors.
func (w *writer[T]) Errors() <-chan error { return w.errs }

// Stats returns the counters.
func (w *writer[T]) Stats() WriterStats {
	w.mu.Lock()
	p := w.pendingLocked()
	w.mu.Unlock()
	return WriterStats{Queued: w.queued.Load(), Sent: w.sent.Load(), Retried: w.retried.Load(),
		Failed: w.failed.Load(), DroppedErrors: w.dropped.Load(), Pending: p}
}

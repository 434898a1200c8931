package gateway

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// AsyncWriter decouples log output from requests: Write appends the line
// to an in-memory buffer and returns at once; one goroutine writes the
// buffer out every FlushInterval, or sooner when it holds FlushBytes. A
// request therefore never waits for the log sink, and the writer wakes a
// few times per interval rather than once per line (a wake-up per line
// costs more CPU than encoding the line). When the buffer is full (the
// output cannot keep up), lines are dropped and counted rather than slowing
// requests down. Safe for concurrent use.
type AsyncWriter struct {
	out      io.Writer
	maxLines int

	mu     sync.Mutex
	buf    []byte // lines waiting to be written
	lines  int    // in buf
	closed bool

	kick    chan struct{} // lines arrived in an empty buffer, or it is full enough
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Uint64
	once    sync.Once
}

const (
	// FlushInterval bounds how long a line waits in an AsyncWriter.
	FlushInterval = 50 * time.Millisecond
	// FlushBytes makes an AsyncWriter write early when this much waits.
	FlushBytes = 64 << 10
)

// NewAsyncWriter starts writing to out, keeping up to queue lines (if zero,
// 8192) in memory. Close stops it after writing what is buffered.
func NewAsyncWriter(out io.Writer, queue int) *AsyncWriter {
	if queue <= 0 {
		queue = 8192
	}
	a := &AsyncWriter{out: out, maxLines: queue, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

// Write buffers a copy of p, which should be one whole line. It never
// blocks on the output and never fails; a line that does not fit is
// dropped (see Dropped), as is any line written after Close.
func (a *AsyncWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	if a.closed || a.lines >= a.maxLines {
		a.mu.Unlock()
		a.dropped.Add(1)
		return len(p), nil
	}
	wake := len(a.buf) == 0
	a.buf = append(a.buf, p...)
	a.lines++
	wake = wake || len(a.buf) >= FlushBytes && len(a.buf)-len(p) < FlushBytes
	a.mu.Unlock()
	if wake {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// run waits for lines, lets a batch gather for up to FlushInterval (less
// when the buffer fills) and writes it with one call.
func (a *AsyncWriter) run() {
	defer close(a.done)
	var spare []byte
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-a.kick:
		case <-a.stop:
			a.flush(&spare)
			return
		}
		if !a.full() {
			t.Reset(FlushInterval)
			select {
			case <-t.C:
			case <-a.kick: // full enough to write now
				t.Stop()
			case <-a.stop:
				t.Stop()
				a.flush(&spare)
				return
			}
		}
		a.flush(&spare)
	}
}

func (a *AsyncWriter) full() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.buf) >= FlushBytes
}

// flush swaps the buffers and writes out the full one; spare is the
// buffer the previous flush wrote, reused so steady state allocates
// nothing.
func (a *AsyncWriter) flush(spare *[]byte) {
	a.mu.Lock()
	b := a.buf
	a.buf, a.lines = (*spare)[:0], 0
	a.mu.Unlock()
	if len(b) > 0 {
		a.out.Write(b)
	}
	if cap(b) > 4<<20 {
		b = nil // a burst grew it; do not keep that much around
	}
	*spare = b
}

// Dropped counts lines lost to a full buffer or written after Close.
func (a *AsyncWriter) Dropped() uint64 { return a.dropped.Load() }

// Close writes out what is buffered and stops the writer.
func (a *AsyncWriter) Close() error {
	a.once.Do(func() {
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		close(a.stop)
	})
	<-a.done
	return nil
}

package gateway

import (
	"io"
	"sync"
	"sync/atomic"
)

// AsyncWriter decouples log output from requests: Write copies the line
// into a bounded queue and returns at once; one goroutine writes the queue
// out. When the queue is full (the output cannot keep up), lines are
// dropped and counted rather than slowing requests down. Safe for
// concurrent use.
type AsyncWriter struct {
	out     io.Writer
	queue   chan []byte
	done    chan struct{}
	dropped atomic.Uint64
	once    sync.Once
	pool    sync.Pool
}

// NewAsyncWriter starts writing to out, keeping up to queue lines (if zero,
// 8192) in memory. Close stops it after writing what is queued.
func NewAsyncWriter(out io.Writer, queue int) *AsyncWriter {
	if queue <= 0 {
		queue = 8192
	}
	a := &AsyncWriter{out: out, queue: make(chan []byte, queue), done: make(chan struct{})}
	go a.run()
	return a
}

// run writes the queue out, batching whatever has accumulated into one
// write: under load that is one syscall for many lines, not one per line.
func (a *AsyncWriter) run() {
	defer close(a.done)
	batch := make([]byte, 0, 64<<10)
	for b := range a.queue {
		batch = append(batch[:0], b...)
		a.recycle(b)
	more:
		for len(batch) < 60<<10 {
			select {
			case b, ok := <-a.queue:
				if !ok {
					break more
				}
				batch = append(batch, b...)
				a.recycle(b)
			default:
				break more
			}
		}
		a.out.Write(batch)
	}
}

func (a *AsyncWriter) recycle(b []byte) {
	if cap(b) <= 4096 {
		b = b[:0]
		a.pool.Put(&b)
	}
}

// Write queues a copy of p. It never blocks and never fails; a line that
// does not fit the queue is dropped (see Dropped).
func (a *AsyncWriter) Write(p []byte) (int, error) {
	var b []byte
	if v := a.pool.Get(); v != nil {
		b = (*v.(*[]byte))[:0]
	}
	b = append(b, p...)
	select {
	case a.queue <- b:
	default:
		a.dropped.Add(1)
	}
	return len(p), nil
}

// Dropped counts lines lost to a full queue.
func (a *AsyncWriter) Dropped() uint64 { return a.dropped.Load() }

// Close writes out the queue and stops. Writes after Close panic.
func (a *AsyncWriter) Close() error {
	a.once.Do(func() { close(a.queue) })
	<-a.done
	return nil
}

package connguard

import (
	"testing"
	"unsafe"
)

// FuzzSniffer feeds arbitrary bytes, cut at arbitrary points, and checks
// that the sniffer never panics, reaches the same verdicts and events
// however the input is cut, and never queues a clean verdict for bytes that
// net/http frames differently. Its memory is the sniffer struct itself: it
// holds no buffer, which TestSnifferAllocs and the size check below pin.
func FuzzSniffer(f *testing.F) {
	seeds := []string{
		get,
		post5,
		chunked,
		clte,
		get + clte + get,
		"OPTIONS * HTTP/1.1\r\n\r\n" + post5,
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;e\r\nhello\r\n0\r\nT: 1\n\n" + get,
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA \r\n0123456789\r\n0\r\n\r\n" + get,
		"POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\nabcdefg" + get,
		"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x80",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint64(i))
	}
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		r := checkSplits(t, in, DefaultMaxHeadBytes, seed)
		compareWithGo(t, in, r)
		// A small head limit moves refusals earlier but must stay
		// independent of the cuts, and still agree with Go.
		small := checkSplits(t, in, 64, seed)
		compareWithGo(t, in, small)
	})
}

func TestSnifferSize(t *testing.T) {
	// A guard against someone adding a buffer: the per-connection state
	// is a few cache lines.
	if size := unsafe.Sizeof(sniffer{}); size > 256 {
		t.Errorf("sniffer size = %d bytes, want <= 256", size)
	}
}

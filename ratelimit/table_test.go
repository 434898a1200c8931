package ratelimit

import (
	"testing"
	"time"
	"unsafe"
)

func TestShardLayout(t *testing.T) {
	if got := unsafe.Sizeof(shard[swState]{}); got != 128 {
		t.Errorf("Sizeof(shard) = %d, want 128 (one shard per cache-line pair)", got)
	}
	if got := unsafe.Sizeof(swState{}); got != 16 {
		t.Errorf("Sizeof(swState) = %d, want 16", got)
	}
	if got := unsafe.Sizeof(tbState{}); got != 8 {
		t.Errorf("Sizeof(tbState) = %d, want 8", got)
	}
}

// TestShardCaps checks that shard caps add up to exactly MaxKeys, that
// small tables use fewer shards rather than tiny ones, and that every
// shard is reachable.
func TestShardCaps(t *testing.T) {
	tests := []struct {
		maxKeys, wantShards int
	}{
		{1, 1}, {7, 1}, {16, 2}, {100, 8}, {515, 64}, {100_000, 64},
	}
	for _, tt := range tests {
		tb := newTable[tbState](tt.maxKeys, time.Minute, 0)
		sum := 0
		for i := range tb.shards {
			sum += tb.shards[i].max
		}
		if len(tb.shards) != tt.wantShards || sum != tt.maxKeys {
			t.Errorf("newTable(MaxKeys %d): %d shards, caps summing to %d; want %d shards, %d",
				tt.maxKeys, len(tb.shards), sum, tt.wantShards, tt.maxKeys)
		}
		for i := range uint64(len(tb.shards)) {
			h := uint64(0x5555) // low bits must not matter
			if tb.shift < 64 {
				h |= i << tb.shift
			}
			if got := tb.index(h); got != i {
				t.Errorf("newTable(MaxKeys %d).index(%#x) = %d, want %d", tt.maxKeys, h, got, i)
			}
		}
	}
}

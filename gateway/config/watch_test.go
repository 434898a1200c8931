package config_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway/config"
)

func startWatch(t *testing.T, path string) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := config.Watch(ctx, path, 30*time.Millisecond, func() { n.Add(1) }); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(50 * time.Millisecond) // let the watch start
	return &n
}

func waitCount(t *testing.T, n *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n.Load() == want {
			time.Sleep(100 * time.Millisecond) // and no more than that
			if n.Load() == want {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("onChange called %d times, want %d", n.Load(), want)
}

func TestWatchInPlaceWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("a: 1\n"), 0o600)
	n := startWatch(t, p)
	os.WriteFile(p, []byte("a: 2\n"), 0o600)
	waitCount(t, n, 1)
	// Same content again (a touch): no call.
	os.WriteFile(p, []byte("a: 2\n"), 0o600)
	waitCount(t, n, 1)
	// A burst of writes is debounced into one call.
	for i := 0; i < 5; i++ {
		os.WriteFile(p, []byte{byte('0' + i)}, 0o600)
	}
	waitCount(t, n, 2)
}

func TestWatchRenameOver(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("a: 1\n"), 0o600)
	n := startWatch(t, p)
	for i := 2; i <= 3; i++ {
		tmp := filepath.Join(dir, ".config.yaml.swp")
		os.WriteFile(tmp, []byte{byte('0' + i)}, 0o600)
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
		waitCount(t, n, int32(i-1))
	}
}

// TestWatchSymlinkSwap mimics a Kubernetes ConfigMap volume: config.yaml →
// ..data/config.yaml, ..data → ..v1; an update writes ..v2 and swaps the
// ..data link atomically.
func TestWatchSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	mk := func(version, content string) {
		os.MkdirAll(filepath.Join(dir, version), 0o700)
		os.WriteFile(filepath.Join(dir, version, "config.yaml"), []byte(content), 0o600)
	}
	mk("..v1", "a: 1\n")
	os.Symlink("..v1", filepath.Join(dir, "..data"))
	p := filepath.Join(dir, "config.yaml")
	os.Symlink(filepath.Join("..data", "config.yaml"), p)
	n := startWatch(t, p)
	mk("..v2", "a: 2\n")
	tmpLink := filepath.Join(dir, "..data_tmp")
	os.Symlink("..v2", tmpLink)
	if err := os.Rename(tmpLink, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..v1"))
	waitCount(t, n, 1)
	b, _ := os.ReadFile(p)
	if string(b) != "a: 2\n" {
		t.Fatalf("read through the link: %q", b)
	}
}

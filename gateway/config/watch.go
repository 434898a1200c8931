package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch calls onChange whenever the content of the file at path changes,
// until ctx ends. It watches the file's directory rather than the file, so
// it survives editors that write a temporary file and rename it over the
// original, and Kubernetes ConfigMap updates that swap a symlink
// (..data → ..2026_11_25...): both replace the inode a file watch would
// follow. Events are debounced, and onChange runs only when the bytes
// actually differ from the last version seen, so touching the file or a
// burst of writes causes at most one call. onChange runs on Watch's
// goroutine.
func Watch(ctx context.Context, path string, debounce time.Duration, onChange func()) error {
	if debounce <= 0 {
		debounce = 250 * time.Millisecond
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		return err
	}
	// A symlinked file may live in another directory (ConfigMaps link
	// config.yaml → ..data/config.yaml); watch where it points too.
	if real, err := filepath.EvalSymlinks(path); err == nil && filepath.Dir(real) != dir {
		w.Add(filepath.Dir(real))
	}
	last := digest(path)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(debounce)
		case _, ok := <-w.Errors:
			if !ok {
				return nil
			}
		case <-timer.C:
			if real, err := filepath.EvalSymlinks(path); err == nil && filepath.Dir(real) != dir {
				w.Add(filepath.Dir(real)) // the link may now point elsewhere
			}
			d := digest(path)
			if d == nil || bytes.Equal(d, last) {
				continue
			}
			last = d
			onChange()
		}
	}
}

func digest(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}

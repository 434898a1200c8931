package discovery

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrBadFile is wrapped by errors about a discovery file that cannot be
// read or parsed.
var ErrBadFile = errors.New("discovery: bad endpoint file")

// maxFileSize bounds what File reads, so a wrong path cannot eat memory.
const maxFileSize = 8 << 20

// File polls a JSON or YAML file holding a list of endpoints:
//
//	# endpoints.yaml
//	- url: http://10.0.0.1:8080
//	  weight: 2
//	  meta: {zone: a}
//	- url: http://10.0.0.2:8080
//
// The format follows the extension (.json, .yaml, .yml); otherwise a file
// starting with "[" is JSON and anything else YAML. Unknown keys are errors.
//
// Both in-place writes and rename-over (write a temporary file, then rename
// it onto Path) are picked up. A file that is missing, empty, unreadable or
// invalid keeps the last good set; the error is logged once until it
// changes. An empty list ("[]") is a valid, empty set.
//
// The struct is read, not modified, by Watch: one value may serve several
// concurrent Watch calls.
type File struct {
	// Path is the file to watch.
	Path string
	// Interval is how often the file is polled (its modification time and
	// size, then a content hash). If zero, 2s is used.
	Interval time.Duration
	// Logger receives load errors and changes. If nil, slog.Default() is
	// used.
	Logger *slog.Logger
}

// fileState is what Watch remembers between polls.
type fileState struct {
	mod     time.Time
	size    int64
	sum     [sha256.Size]byte
	read    bool // the stat fields above describe a successful read
	lastErr string
	sent    bool
	last    []Endpoint
}

// Watch implements [Source]. It only returns when ctx ends.
func (f *File) Watch(ctx context.Context, ch chan<- []Endpoint) error {
	log := cmp.Or(f.Logger, slog.Default())
	t := time.NewTicker(cmp.Or(f.Interval, 2*time.Second))
	defer t.Stop()
	var st fileState
	for {
		eps, changed, err := f.poll(&st)
		switch {
		case err != nil:
			if msg := err.Error(); msg != st.lastErr {
				st.lastErr = msg
				log.Error("discovery: keeping the last endpoint set", "path", f.Path, "error", err)
			}
		case changed:
			st.lastErr = ""
			if !send(ctx, ch, clone(eps)) {
				return ctx.Err()
			}
			log.Info("discovery: endpoint file loaded", "path", f.Path, "endpoints", len(eps))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// poll reloads the file if it may have changed and reports whether the
// endpoint set differs from the last one sent.
func (f *File) poll(st *fileState) ([]Endpoint, bool, error) {
	fi, err := os.Stat(f.Path)
	if err != nil {
		st.read = false
		return nil, false, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	// A modification time without sub-second part comes from a file system
	// with coarse timestamps, where a same-size rewrite within the same
	// second is invisible to stat: only the hash can tell.
	coarse := fi.ModTime().Nanosecond() == 0
	if st.read && !coarse && fi.ModTime().Equal(st.mod) && fi.Size() == st.size {
		return nil, false, nil
	}
	data, err := readLimited(f.Path)
	if err != nil {
		st.read = false
		return nil, false, err
	}
	sum := sha256.Sum256(data)
	if st.read && sum == st.sum && st.sent {
		st.mod, st.size = fi.ModTime(), fi.Size()
		return nil, false, nil
	}
	eps, err := parseEndpoints(f.Path, data)
	if err != nil {
		st.read = false
		return nil, false, err
	}
	st.mod, st.size, st.sum, st.read = fi.ModTime(), fi.Size(), sum, true
	if st.sent && equal(eps, st.last) {
		return nil, false, nil
	}
	st.last, st.sent = eps, true
	return eps, true, nil
}

func readLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, path, err)
	case len(data) > maxFileSize:
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadFile, path, maxFileSize)
	case len(bytes.TrimSpace(data)) == 0:
		// Most likely caught between truncate and write of an in-place
		// update; an intentionally empty set is written "[]".
		return nil, fmt.Errorf("%w: %s is empty", ErrBadFile, path)
	}
	return data, nil
}

// parseEndpoints decodes data as JSON or YAML, by the extension of path or,
// failing that, by its first character.
func parseEndpoints(path string, data []byte) ([]Endpoint, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // editors on Windows add a BOM
	isJSON := false
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		isJSON = true
	case ".yaml", ".yml":
	default:
		isJSON = bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("["))
	}
	var eps []Endpoint
	if isJSON {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&eps); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, path, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: %s: trailing data after the endpoint list", ErrBadFile, path)
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&eps); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, path, err)
		}
	}
	eps, err := normalize(eps)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, path, err)
	}
	return eps, nil
}

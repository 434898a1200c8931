package discovery

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// waitLog waits until s has been logged n times.
func (b *logBuffer) waitLog(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.count(s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log does not contain %q %d times:\n%s", s, n, b.buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// renameOver replaces path atomically, as editors and config management do.
func renameOver(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileJSONInPlace(t *testing.T) {
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "api.json")
	write(t, path, `[{"url":"http://10.0.0.2:80","weight":2},{"url":"http://10.0.0.1:80","meta":{"zone":"a"}}]`)
	ch := watch(t, &File{Path: path, Interval: 10 * time.Millisecond, Logger: discardLogger()})

	want := []Endpoint{{URL: "http://10.0.0.1:80", Weight: 1, Meta: map[string]string{"zone": "a"}}, {URL: "http://10.0.0.2:80", Weight: 2}}
	if got := recv(t, ch); !equal(got, want) {
		t.Fatalf("first set = %v, want %v", got, want)
	}

	write(t, path, `[{"url":"http://10.0.0.3:80"}]`)
	recvWant(t, ch, []Endpoint{{URL: "http://10.0.0.3:80", Weight: 1}})

	write(t, path, `[]`)
	recvWant(t, ch, []Endpoint{})
}

func TestFileYAMLRenameOver(t *testing.T) {
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "api.yaml")
	write(t, path, "- url: http://a:8080\n  weight: 3\n")
	ch := watch(t, &File{Path: path, Interval: 10 * time.Millisecond, Logger: discardLogger()})
	if got, want := recv(t, ch), []Endpoint{{URL: "http://a:8080", Weight: 3}}; !equal(got, want) {
		t.Fatalf("first set = %v, want %v", got, want)
	}

	renameOver(t, path, "- url: http://a:8080\n  weight: 3\n- url: http://b:8080\n")
	recvWant(t, ch, []Endpoint{{URL: "http://a:8080", Weight: 3}, {URL: "http://b:8080", Weight: 1}})
}

func TestFileBadKeepsLastGood(t *testing.T) {
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "api.yml")
	write(t, path, "- url: http://a:1\n")
	logs := &logBuffer{}
	ch := watch(t, &File{Path: path, Interval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if got := urls(recv(t, ch)); got != "http://a:1" {
		t.Fatalf("first set = %q, want %q", got, "http://a:1")
	}

	bad := []struct{ name, content string }{
		{"syntax", "- url: [unclosed\n"},
		{"unknown key", "- url: http://b:1\n  wieght: 2\n"},
		{"invalid URL", "- url: b:1\n"},
		{"empty", ""},
	}
	for i, b := range bad {
		// Atomic replacement: an in-place write could be seen half done,
		// which logs a second, different error.
		renameOver(t, path, b.content)
		logs.waitLog(t, "keeping the last endpoint set", i+1)
		noRecv(t, ch, 30*time.Millisecond)
	}
	// The same error is logged once, not on every poll.
	if n := logs.count("keeping the last endpoint set"); n != len(bad) {
		t.Errorf("error logged %d times, want %d", n, len(bad))
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	logs.waitLog(t, "keeping the last endpoint set", len(bad)+1)
	noRecv(t, ch, 30*time.Millisecond)

	renameOver(t, path, "- url: http://c:1\n")
	recvWant(t, ch, []Endpoint{{URL: "http://c:1", Weight: 1}})
}

func TestFileMissingAtStart(t *testing.T) {
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "later.json")
	ch := watch(t, &File{Path: path, Interval: 10 * time.Millisecond, Logger: discardLogger()})
	noRecv(t, ch, 50*time.Millisecond)
	write(t, path, `[{"url":"http://a"}]`)
	recvWant(t, ch, []Endpoint{{URL: "http://a", Weight: 1}})
}

func TestFileSameContentNotResent(t *testing.T) {
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "api.json")
	content := `[{"url":"http://a"}]`
	write(t, path, content)
	logs := &logBuffer{}
	ch := watch(t, &File{Path: path, Interval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	recv(t, ch)
	renameOver(t, path, content)
	// Reformatting gives another hash but the same set.
	write(t, path, "[ {\"url\": \"HTTP://A/\"} ]")
	noRecv(t, ch, 100*time.Millisecond)
	if n := logs.count("endpoint file loaded"); n != 1 {
		t.Errorf("loaded logged %d times, want 1", n)
	}
}

func TestFileCoarseModTime(t *testing.T) {
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "api.json")
	stamp := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) // whole second, as on coarse file systems
	write(t, path, `[{"url":"http://a:1"}]`)
	if err := os.Chtimes(path, stamp, stamp); err != nil {
		t.Fatal(err)
	}
	ch := watch(t, &File{Path: path, Interval: 10 * time.Millisecond, Logger: discardLogger()})
	recvWant(t, ch, []Endpoint{{URL: "http://a:1", Weight: 1}})

	// Same size, same modification time: only the content hash differs.
	// Renaming a prepared file makes the change atomic for the poller.
	tmp := path + ".tmp"
	write(t, tmp, `[{"url":"http://b:1"}]`)
	if err := os.Chtimes(tmp, stamp, stamp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	recvWant(t, ch, []Endpoint{{URL: "http://b:1", Weight: 1}})
}

func TestParseEndpoints(t *testing.T) {
	tests := []struct {
		path, data string
		want       string
		wantErr    bool
	}{
		{"x.json", `[{"url":"http://a"}]`, "http://a", false},
		{"x.json", `[{"url":"http://a"}] [{"url":"http://b"}]`, "", true},
		{"x.json", "- url: http://a\n", "", true},
		{"x.yaml", `[{"url":"http://a"}]`, "http://a", false},
		{"x.YML", "- {url: http://b}\n- url: http://a\n", "http://a http://b", false},
		{"endpoints", "\ufeff  [{\"url\":\"http://a\"}]", "http://a", false},
		{"endpoints", "- url: http://a\n", "http://a", false},
		{"endpoints", "url: http://a\n", "", true},
		{"x.json", `[{"url":"http://a","extra":1}]`, "", true},
		{"x.json", `null`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path+" "+tt.data, func(t *testing.T) {
			got, err := parseEndpoints(tt.path, []byte(tt.data))
			if tt.wantErr {
				if !errors.Is(err, ErrBadFile) {
					t.Fatalf("parseEndpoints() error = %v, want ErrBadFile", err)
				}
				return
			}
			if err != nil || urls(got) != tt.want {
				t.Fatalf("parseEndpoints() = %q, %v; want %q", urls(got), err, tt.want)
			}
		})
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/config"
)

// The container image (../../Dockerfile) is FROM scratch: the binary, the
// CA bundle and nothing else, run as nobody. No container engine runs in
// CI, so these tests check the image's recipe and then run the same
// contents the same way: a chroot holding only those two files, with the
// image's user.

const (
	// imageUID is the Dockerfile's USER; Kubernetes' runAsUser matches it.
	imageUID = 65534
	// caBundle is where the image (and Debian) keep root certificates; Go's
	// crypto/x509 looks there first on Linux.
	caBundle = "/etc/ssl/certs/ca-certificates.crt"
	// stampedVersion is set with -ldflags -X like the Dockerfile's VERSION.
	stampedVersion = "container-test"
)

// The Dockerfile stamps main.version with -X; the linker silently ignores
// a -X for a variable that does not exist, so keep the name referenced.
var _ = version

func TestContainerEmptyRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it in a chroot (a few seconds); skipped with -short")
	}
	if os.Geteuid() != 0 {
		msg := fmt.Sprintf("chroot and setuid to %d need root (euid is %d); run as root to cover the container image", imageUID, os.Geteuid())
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " — CI=true: CI runs as root, so this is a failure, not a skip")
		}
		t.Skip(msg)
	}
	def, err := config.Parse("(embedded default)", config.Default(), nil)
	if err != nil {
		t.Fatalf("embedded default does not parse: %v", err)
	}
	before := runtime.NumGoroutine()

	root := t.TempDir()
	// TempDir is 0700; the unprivileged user must be able to walk the root.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "api-gateway")
	buildStatic(t, bin)
	if err := checkStatic(bin); err != nil {
		t.Fatalf("checkStatic(%s) = %v, want a static binary", bin, err)
	}
	copyFile(t, caBundle, filepath.Join(root, caBundle))
	if got, want := listTree(t, root), []string{"api-gateway", "etc", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt"}; !slices.Equal(got, want) {
		t.Fatalf("root holds %q, want exactly %q", got, want)
	}

	port, adminPort := freePort(t), freePort(t)
	var stderr syncBuffer
	cmd := &exec.Cmd{
		Path: "/api-gateway", // resolved inside the chroot
		Args: []string{"/api-gateway"},
		Dir:  "/",
		// Nothing from the test's environment leaks in (GATEWAY_CONFIG, say):
		// the image starts with an empty environment too.
		Env:    []string{"PORT=" + strconv.Itoa(port), "ADMIN_PORT=" + strconv.Itoa(adminPort)},
		Stderr: &stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Chroot:     root,
			Credential: &syscall.Credential{Uid: imageUID, Gid: imageUID},
			Pdeathsig:  syscall.SIGKILL, // never outlive a crashed test
		},
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start in chroot: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("gateway stderr:\n%s", stderr.String())
		}
	})

	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	code, body := poll(t, client, base+gateway.PathHealth, exited, func(code int) bool { return code == http.StatusOK })
	var health struct{ Status string }
	if err := json.Unmarshal(body, &health); code != http.StatusOK || err != nil || health.Status != "ok" {
		t.Fatalf("GET /health = %d %q, want 200 {\"status\":\"ok\"}", code, body)
	}

	// The process is really confined and unprivileged.
	if got, err := os.Readlink(fmt.Sprintf("/proc/%d/root", cmd.Process.Pid)); err != nil || got != root {
		t.Errorf("process root = %q, %v, want %q", got, err, root)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"Uid:", "Gid:"} {
		want := fmt.Sprintf("%s\t%d\t%d\t%d\t%d\n", field, imageUID, imageUID, imageUID, imageUID)
		if !bytes.Contains(status, []byte(want)) {
			t.Errorf("/proc/PID/status has no %q", want)
		}
	}

	for _, tc := range []struct {
		url      string
		wantCode int
		wantBody string
	}{
		{base + gateway.PathReady, 200, `"ready"`},
		{fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, gateway.PathLive), 200, `"ok"`},
	} {
		code, body := get(client, tc.url)
		if code != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
			t.Errorf("GET %s = %d %q, want %d with %s", tc.url, code, body, tc.wantCode, tc.wantBody)
		}
	}
	// -X main.version reached the binary, as the Dockerfile's VERSION does.
	code, body = get(client, base+gateway.PathHealthDetailed)
	var detailed gateway.Detailed
	if err := json.Unmarshal(body, &detailed); code != http.StatusOK || err != nil || detailed.Version != stampedVersion {
		t.Errorf("GET /health/detailed = %d, version %q (%v), want 200, %q", code, detailed.Version, err, stampedVersion)
	}

	// One SIGTERM drains: /ready turns 503 at once, the process exits 0
	// after shutdown_delay. (A second signal would end it at once, by the
	// signal, with no exit status 0.)
	delay := def.Server.ShutdownDelay.D()
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, body = poll(t, client, base+gateway.PathReady, exited, func(code int) bool { return code != http.StatusOK })
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "draining") {
		t.Errorf("GET /ready while draining = %d %q, want 503 draining", code, body)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		elapsed := time.Since(sent)
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
		if elapsed < delay {
			t.Errorf("exited %v after SIGTERM, before shutdown_delay %v", elapsed, delay)
		}
	case <-time.After(delay + 5*time.Second):
		t.Fatalf("still running %v after SIGTERM (shutdown_delay %v)", time.Since(sent), delay)
	}
	if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Errorf("stderr has no \"stopped\" record:\n%s", stderr.String())
	}
	checkGoroutines(t, before)
}

// buildStatic builds the binary the way the Dockerfile does.
func buildStatic(t *testing.T, out string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+stampedVersion, "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
}

// checkStatic reports why the ELF file at path would not run without a
// dynamic loader and libc: a PT_INTERP program header or DT_NEEDED
// libraries.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(io.LimitReader(p.Open(), 256))
			return fmt.Errorf("has PT_INTERP %q", strings.TrimRight(string(b), "\x00"))
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return err
	}
	if len(libs) > 0 {
		return fmt.Errorf("needs shared libraries %q (DT_NEEDED)", libs)
	}
	return nil
}

func TestCheckStatic(t *testing.T) {
	for _, tc := range []struct {
		path, want string
	}{
		{"/bin/ls", "PT_INTERP"}, // dynamically linked on every distribution we run
		{caBundle, "bad magic"},  // not ELF at all
	} {
		if _, err := os.Stat(tc.path); err != nil {
			t.Logf("skipping %s: %v", tc.path, err)
			continue
		}
		if err := checkStatic(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkStatic(%s) = %v, want an error containing %q", tc.path, err, tc.want)
		}
	}
}

// TestDockerfile checks the image recipe against the binary it packages:
// it cannot be built here, so its contract is checked as text.
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "../../Dockerfile")
	def, err := config.Parse("(embedded default)", config.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}

	var froms []string
	final := map[string][]string{} // instruction → arguments, final stage only
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in.args)
			clear(final)
			continue
		}
		final[in.cmd] = append(final[in.cmd], in.args)
	}
	all := func(cmd string) string {
		var s []string
		for _, in := range ins {
			if in.cmd == cmd {
				s = append(s, in.args)
			}
		}
		return strings.Join(s, "\n")
	}
	wantBuilder := "golang:" + string(goVersion[1])
	tests := []struct {
		name string
		ok   bool
		got  any
	}{
		{"two stages", len(froms) == 2, froms},
		{"builder is " + wantBuilder + " (go.mod's go)", len(froms) > 0 && strings.Contains(froms[0], wantBuilder), froms},
		{"final stage FROM scratch", len(froms) > 0 && froms[len(froms)-1] == "scratch", froms},
		{"static build", strings.Contains(all("RUN"), "CGO_ENABLED=0") && strings.Contains(all("RUN"), "-trimpath"), all("RUN")},
		{"version stamped", strings.Contains(all("RUN"), "-X main.version=${VERSION}") && strings.Contains(all("ARG"), "VERSION=dev"), all("RUN")},
		{"builds ./cmd/api-gateway", strings.Contains(all("RUN"), "./cmd/api-gateway"), all("RUN")},
		{"CA bundle copied", slices.ContainsFunc(final["COPY"], func(s string) bool {
			return strings.HasPrefix(s, "--from=") && strings.HasSuffix(s, caBundle+" "+caBundle)
		}), final["COPY"]},
		{"binary at /api-gateway", slices.ContainsFunc(final["COPY"], func(s string) bool { return strings.HasSuffix(s, " /api-gateway") }), final["COPY"]},
		{"USER nobody", slices.Equal(final["USER"], []string{fmt.Sprintf("%d:%d", imageUID, imageUID)}), final["USER"]},
		{"EXPOSE main and admin ports", slices.Equal(final["EXPOSE"], []string{fmt.Sprintf("%d %d", def.Server.Port, def.Admin.Port)}), final["EXPOSE"]},
		{"ENTRYPOINT exec form", slices.Equal(final["ENTRYPOINT"], []string{`["/api-gateway"]`}), final["ENTRYPOINT"]},
		{"no shell in the image", len(final["RUN"]) == 0, final["RUN"]},
	}
	for _, tc := range tests {
		if !tc.ok {
			t.Errorf("Dockerfile: %s: got %q", tc.name, tc.got)
		}
	}
}

type instruction struct{ cmd, args string }

// parseDockerfile reads instructions, joining continuation lines and
// dropping comments.
func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDockerignore checks that the build context keeps every file the
// binary is built from (Go files and embedded files of this module's
// packages, go.mod, go.sum): an over-eager .dockerignore only shows up
// when the image is built.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	ignored := dockerignore(t, string(data))
	out, err := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`,
		".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	modRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(modRoot, f)
		if err != nil {
			t.Fatal(err)
		}
		needed = append(needed, filepath.ToSlash(rel))
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %q", needed)
	}
	for _, f := range needed {
		if ignored(f) {
			t.Errorf(".dockerignore excludes %s, which the build needs", f)
		}
	}
	// And it does keep out what must not be sent to the daemon.
	for _, f := range []string{".git/config", "hub.test", "gateway/config/testdata/x.yaml", "gateway/gateway_test.go"} {
		if !ignored(f) {
			t.Errorf(".dockerignore keeps %s, want it excluded", f)
		}
	}
}

// dockerignore returns a matcher with Docker's semantics, enough for our
// file: patterns relative to the context root, `*` and `?` within a path
// segment, `**` across segments, the last matching pattern winning and
// `!` re-including, and a match of a directory covering its contents.
func dockerignore(t *testing.T, data string) func(path string) bool {
	t.Helper()
	type rule struct {
		re     *regexp.Regexp
		negate bool
	}
	var rules []rule
	for _, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		neg := strings.HasPrefix(line, "!")
		line = strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$")
		rules = append(rules, rule{regexp.MustCompile(re.String()), neg})
	}
	if len(rules) == 0 {
		t.Fatal(".dockerignore has no patterns")
	}
	return func(path string) bool {
		ignored := false
		for _, r := range rules {
			if r.re.MatchString(path) {
				ignored = !r.negate
			}
		}
		return ignored
	}
}

// poll GETs url until accept(status) holds, the process exits, or 10s pass.
func poll(t *testing.T, c *http.Client, url string, exited chan error, accept func(int) bool) (int, []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(c, url)
		if code != 0 && accept(code) {
			return code, body
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("gateway exited (%v) while polling %s", err, url)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: no acceptable answer in 10s (last %d %q)", url, code, body)
		}
	}
}

// get returns the status and body, status 0 when the request failed.
func get(c *http.Client, url string) (int, []byte) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, b
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatalf("the image needs %s: %v", from, err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// listTree returns every path under root, relative and sorted.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkGoroutines fails if more goroutines run than before, after giving
// finished ones a moment to go.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	var n int
	for i := 0; i < 50; i++ {
		if n = runtime.NumGoroutine(); n <= before {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("goroutines = %d after the test, want at most %d", n, before)
}

// syncBuffer is a bytes.Buffer safe for the writer exec starts and the
// test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

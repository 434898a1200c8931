// Command gwbench reruns the load comparison of the gateway against nginx
// and a bare httputil.ReverseProxy with the shared harness (wrk on
// loopback, interleaved rounds, same-run ratios).
//
//	go run ./cmd/gwbench -harness ../shared/bench -mode full
//
// It builds the api-gateway binary, writes a configuration for the chosen
// mode, and runs the harness's run.sh with the gateway as its target.
// Modes:
//
//	bare      no auth, no rate limit, no access log (routing and proxying only)
//	observed  metrics, access logs, trace context; no rate limit, no auth
//	off       as observed, plus a per-IP rate limit (not hit)
//	full      as off, plus JWT auth on the route (HS256; -alg EdDSA for Ed25519)
//	all       each of the above in turn, full with both algorithms, then
//	          the harness's one-line summary of every run together
//
// -max-conns N sets the service's max_conns_per_instance: with fast
// backends, fewer upstream connections than client connections (the
// gateway queues requests for them) costs less CPU per request.
//
// Extra harness knobs pass through the environment (CONNS, ROUNDS,
// DURATION, WARMUP, ...); see the harness README. Traffic stays on
// 127.0.0.1 and the harness stops every process it started.
//
// -inprocess N instead runs the gateway package's handler benchmark
// (BenchmarkProxy: the bare proxy, the gateway, the observability chain
// and the full chain, all calling one real loopback backend) in N fresh
// processes and prints each target's median ratio to the bare proxy over
// the rounds, with the range:
//
//	go run ./cmd/gwbench -inprocess 10
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pyairtable/api-gateway/authn"
)

func main() {
	harness := flag.String("harness", "../shared/bench", "directory of the shared benchmark harness (run.sh)")
	mode := flag.String("mode", "full", "bare, observed, off, full or all")
	alg := flag.String("alg", "HS256", "JWT algorithm in full mode: HS256 or EdDSA")
	port := flag.Int("port", 19080, "gateway port")
	maxConns := flag.Int("max-conns", 0, "services.items.max_conns_per_instance (0: no bound); fewer upstream connections than client connections makes the gateway queue requests, which costs less CPU with fast backends")
	rounds := flag.Int("inprocess", 0, "instead of the harness, run the in-process handler benchmark this many rounds and report median ratios")
	bench := flag.String("bench", "BenchmarkProxy/", "with -inprocess: the benchmarks to run (go test -bench pattern)")
	benchtime := flag.String("benchtime", "2s", "with -inprocess: go test -benchtime per target and round")
	flag.Parse()
	if *rounds > 0 {
		if err := inProcess(*rounds, *bench, *benchtime, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "gwbench:", err)
			os.Exit(1)
		}
		return
	}
	runs := [][2]string{{*mode, *alg}}
	if *mode == "all" {
		runs = [][2]string{{"bare", ""}, {"observed", ""}, {"off", ""}, {"full", "HS256"}, {"full", "EdDSA"}}
	}
	var out bytes.Buffer
	for _, r := range runs {
		if err := run(*harness, r[0], r[1], *port, *maxConns, io.MultiWriter(os.Stdout, &out)); err != nil {
			fmt.Fprintln(os.Stderr, "gwbench:", err)
			os.Exit(1)
		}
	}
	if len(runs) > 1 {
		fmt.Println("\nsummary (ratios to the bare Go proxy of the same run):")
		for _, l := range summaries(out.String()) {
			fmt.Println(l)
		}
	}
}

// summaries picks the harness's one-line summary of each run out of its
// output.
func summaries(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "API-GATEWAY-") {
			lines = append(lines, l)
		}
	}
	return lines
}

func run(harness, mode, alg string, port, maxConns int, stdout io.Writer) error {
	runSh, err := filepath.Abs(filepath.Join(harness, "run.sh"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(runSh); err != nil {
		return fmt.Errorf("harness not found: %w", err)
	}
	dir, err := os.MkdirTemp("", "gwbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "api-gateway")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/api-gateway")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	cfg, header, err := config(mode, alg, port, maxConns, dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.Command("bash", runSh, "--port", fmt.Sprint(port), "--", bin, "-config", cfgPath)
	name := "api-gateway-" + mode + strings.ToLower(map[bool]string{true: "-" + alg}[mode == "full"])
	if maxConns > 0 {
		name += fmt.Sprintf("-cap%d", maxConns)
	}
	cmd.Env = append(os.Environ(), "GATEWAY_NAME="+name)
	if header != "" {
		cmd.Env = append(cmd.Env, "HEADER="+header)
	}
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	return cmd.Run()
}

// config writes the gateway configuration of a mode; the harness backend
// listens on 127.0.0.1:$BASE_PORT (19000 unless BASE_PORT is set).
func config(mode, alg string, port, maxConns int, dir string) (cfg, header string, err error) {
	base := os.Getenv("BASE_PORT")
	if base == "" {
		base = "19000"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `server:
  host: 127.0.0.1
  port: %d
  shutdown_delay: 0s
  limits: {max_conns_per_ip: 0}
  transport: {max_idle_conns: 10000, max_idle_conns_per_host: 8192}
admin: {port: %d}
log: {level: warn, access: %t}
metrics: {enabled: %t}
`, port, port+1000, mode != "bare", mode != "bare")
	if mode != "bare" && mode != "observed" {
		b.WriteString("security:\n  rate_limit: {enabled: true, per_ip_limit: 100000000, window: 1s}\n")
	}
	public := "true"
	if mode == "full" {
		public = "false"
		secret := "gwbench-secret-0123456789abcdef-0123456789"
		switch alg {
		case "HS256":
			fmt.Fprintf(&b, "auth: {jwt_secret: %q}\n", secret)
			tok, err := authn.MintHS256([]byte(secret), authn.MintClaims{Subject: "bench", TTL: 24 * time.Hour})
			if err != nil {
				return "", "", err
			}
			header = "Authorization: Bearer " + tok
		case "EdDSA":
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return "", "", err
			}
			der, _ := x509.MarshalPKIXPublicKey(pub)
			keyFile := filepath.Join(dir, "ed25519.pem")
			os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
			fmt.Fprintf(&b, "auth: {jwt_algorithms: [EdDSA], public_keys: [{kid: bench, file: %q}]}\n", keyFile)
			t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "bench", "exp": time.Now().Add(24 * time.Hour).Unix(), "iat": time.Now().Unix()})
			t.Header["kid"] = "bench"
			s, err := t.SignedString(priv)
			if err != nil {
				return "", "", err
			}
			header = "Authorization: Bearer " + s
		default:
			return "", "", fmt.Errorf("unknown -alg %q", alg)
		}
	} else if mode != "bare" && mode != "observed" && mode != "off" {
		return "", "", fmt.Errorf("unknown -mode %q", mode)
	}
	fmt.Fprintf(&b, `services:
  items:
    url: "http://127.0.0.1:%s"
    outlier_detection: {enabled: false}
    max_conns_per_instance: %d
routes:
  - prefix: /api/v1/items
    service: items
    public: %s
  - prefix: /ws
    service: items
    public: %s
    websocket: true
`, base, max(maxConns, 0), public, public)
	return b.String(), header, nil
}

// Command api-gateway runs the API gateway from a YAML configuration.
//
//	api-gateway [-config FILE] [-demo]        serve
//	api-gateway check [-config FILE] [-print] validate a configuration
//	api-gateway route [-config FILE] METHOD PATH
//	api-gateway version
//
// Without -config, the file named by GATEWAY_CONFIG is used, else
// configs/config.yaml when it exists, else the embedded default.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/discovery"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/config"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
	"github.com/pyairtable/api-gateway/gateway/hub"
	"github.com/pyairtable/api-gateway/gateway/metrics"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "":
		return serve(ctx, args, stderr)
	case "check":
		return check(args, stdout, stderr)
	case "route":
		return route(args, stdout, stderr)
	case "token":
		return token(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "api-gateway", buildVersion())
		return 0
	case "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "api-gateway: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  api-gateway [-config FILE] [-demo]          serve
  api-gateway check [-config FILE] [-print]   validate a configuration (-print: effective config)
  api-gateway route [-config FILE] METHOD PATH  show the route, service and policy a request gets
  api-gateway token -sub ID [-roles a,b] [-tenant T] [-ttl 1h]  mint a development token
  api-gateway version
Without -config: $GATEWAY_CONFIG, else configs/config.yaml if present, else the embedded default.
`)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// configPath resolves which file to load ("" means the embedded default).
func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv("GATEWAY_CONFIG"); p != "" {
		return p
	}
	if _, err := os.Stat(config.DefaultPath); err == nil {
		return config.DefaultPath
	}
	return ""
}

func load(flagValue string, stderr io.Writer) (*config.Config, bool) {
	c, err := config.Load(configPath(flagValue))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, false
	}
	return c, true
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file")
	print := fs.Bool("print", false, "print the effective configuration with every default filled in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, ok := load(*file, stderr)
	if !ok {
		return 1
	}
	if _, err := newGateway(c, slog.New(slog.DiscardHandler)); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *print {
		b, err := c.Marshal()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		stdout.Write(b)
		return 0
	}
	name := c.File
	fmt.Fprintf(stdout, "%s: ok (%d services, %d routes, environment %s)\n", name, len(c.Services), len(c.Routes), c.Server.Environment)
	return 0
}

func route(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file")
	host := fs.String("host", "", "Host header of the request")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: api-gateway route [-config FILE] [-host HOST] METHOD PATH")
		return 2
	}
	c, ok := load(*file, stderr)
	if !ok {
		return 1
	}
	g, err := newGateway(c, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	method, target := fs.Arg(0), fs.Arg(1)
	if u, err := url.Parse(target); err == nil && u.Host != "" {
		*host, target = u.Host, u.RequestURI()
	}
	res := g.Resolve(method, *host, target)
	switch res.Status {
	case http.StatusOK:
	case http.StatusMethodNotAllowed:
		fmt.Fprintf(stdout, "%s %s → 405 method not allowed (allowed: %s)\n", strings.ToUpper(method), target, res.Allow)
		return 1
	default:
		fmt.Fprintf(stdout, "%s %s → %d no route\n", strings.ToUpper(method), target, res.Status)
		return 1
	}
	auth := "authenticated"
	if res.Route.Public {
		auth = "public"
	}
	roles := "any"
	if len(res.Route.Roles) > 0 {
		roles = strings.Join(res.Route.Roles, " | ")
	}
	queue := "none"
	if res.MaxConnsPerInstance > 0 {
		queue = fmt.Sprintf("beyond %d in flight per instance", res.MaxConnsPerInstance)
	}
	fmt.Fprintf(stdout, "route:     %s\nservice:   %s\nforwarded: %s\nauth:      %s\nroles:     %s\ntimeout:   %s\nretries:   %d\nqueue:     %s\ninstances: %s\n",
		res.Route.Name, res.Service, res.Path, auth, roles, res.Timeout, res.Retries, queue, strings.Join(res.Instances, ", "))
	return 0
}

// token mints an HS256 token with the configured secret, for development
// and tests. Production configurations refuse: tokens there come from the
// identity provider.
func token(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file")
	sub := fs.String("sub", "", "subject (user id), required")
	roles := fs.String("roles", "", "comma-separated roles")
	perms := fs.String("permissions", "", "comma-separated permissions")
	tenant := fs.String("tenant", "", "tenant id")
	ttl := fs.Duration("ttl", 0, "lifetime (default auth.jwt_expiry)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *sub == "" {
		fmt.Fprintln(stderr, "api-gateway token: -sub is required")
		return 2
	}
	c, ok := load(*file, stderr)
	if !ok {
		return 1
	}
	if c.Production() {
		fmt.Fprintln(stderr, "api-gateway token: refused in production (server.environment: production)")
		return 1
	}
	if c.Auth.JWTSecret == "" {
		fmt.Fprintln(stderr, "api-gateway token: no auth.jwt_secret configured (set JWT_SECRET)")
		return 1
	}
	if *ttl == 0 {
		*ttl = c.Auth.JWTExpiry.D()
	}
	tok, err := authn.MintHS256([]byte(c.Auth.JWTSecret), authn.MintClaims{
		Subject: *sub, Roles: splitList(*roles), Permissions: splitList(*perms), Tenant: *tenant, TTL: *ttl,
	})
	if err != nil {
		fmt.Fprintln(stderr, "api-gateway token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// logLevel is the level of the process's logger; reloads change it.
var logLevel = new(slog.LevelVar)

func newLogger(c *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Log.Level))
	logLevel.Set(level)
	opts := &slog.HandlerOptions{Level: logLevel}
	if c.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func newAccessLogger(c *config.Config, w io.Writer) *slog.Logger {
	return gateway.NewAccessLog(w, c.Log.Format)
}

func newGateway(c *config.Config, logger *slog.Logger, opts ...config.Options) (*gateway.Gateway, error) {
	var opt config.Options
	if len(opts) > 0 {
		opt = opts[0]
	}
	gc, err := c.Gateway(opt)
	if err != nil {
		return nil, err
	}
	gc.Logger = logger
	gc.Version = buildVersion()
	return gateway.New(gc)
}

func serve(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("api-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file")
	demo := fs.Bool("demo", false, "also start in-process demo backends for every loopback service instance")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, ok := load(*file, stderr)
	if !ok {
		return 1
	}
	logger := newLogger(c, stderr)
	slog.SetDefault(logger)
	tuneRuntime(logger)
	var demoToken string
	if *demo {
		if c.Production() {
			logger.Error("-demo is refused in production")
			return 1
		}
		if c.Auth.JWTSecret == "" {
			// A throwaway secret for this process, so the demo can show
			// authenticated requests without any setup.
			b := make([]byte, 32)
			rand.Read(b)
			c.Auth.JWTSecret = hex.EncodeToString(b)
		}
		demoToken, _ = authn.MintHS256([]byte(c.Auth.JWTSecret), authn.MintClaims{
			Subject: "demo-user", Roles: []string{"admin"}, Tenant: "demo", TTL: c.Auth.JWTExpiry.D(),
		})
	}
	// The registry lives on the admin port and is always present: without
	// admin.api_key it refuses every call (deny by default).
	registry := discovery.NewRegistry(discovery.RegistrySettings{APIKey: c.Admin.APIKey})
	opts := config.Options{Registry: registry, Limiters: &config.Limiters{}}
	var reg *prometheus.Registry
	if c.MetricsEnabled() {
		reg = prometheus.NewRegistry()
		m, err := metrics.NewWithSettings(reg, metrics.Settings{Version: buildVersion()})
		if err != nil {
			logger.Error("metrics", "error", err.Error())
			return 1
		}
		opts.Metrics, opts.MetricsHandler = m, m.Handler(reg)
	}
	// Access logs go through a bounded queue: a slow log sink drops lines
	// (counted) instead of slowing requests down.
	accessOut := gateway.NewAsyncWriter(stderr, 0)
	defer accessOut.Close()
	// Access records are Info: they are written whatever log.level is
	// (log.access turns them off), so quieting operational logs never
	// loses the request log.
	opts.AccessLog = newAccessLogger(c, accessOut)
	if u := c.Security.RateLimit.RedisURL; u != "" && c.Security.RateLimit.Enabled {
		client, err := redisstore.NewClient(u)
		if err != nil {
			logger.Error("redis", "error", err.Error())
			return 1
		}
		defer client.Close()
		opts.Redis = client
		m := opts.Metrics
		opts.OnRateLimitStoreError = func(err error) {
			m.RateLimitStoreError("redis")
			logger.Debug("rate-limit store error", "error", err.Error())
		}
	}
	var g *gateway.Gateway
	var hubRedis redis.UniversalClient
	var err error
	if u := c.Security.RateLimit.RedisURL; u != "" && c.WebSocket.Hub.Enabled {
		hubRedis, err = redisstore.NewClient(u)
		if err != nil {
			logger.Error("redis", "error", err.Error())
			return 1
		}
		defer hubRedis.Close()
	}
	hb, err := c.NewHub(
		func(ctx context.Context, token string) (hub.Identity, error) {
			p, err := g.VerifyToken(ctx, token)
			if err != nil {
				return hub.Identity{}, err
			}
			return hub.Identity{Subject: p.Subject, Roles: p.Roles, Tenant: p.Tenant}, nil
		},
		func(r *http.Request) bool { return g.OriginAllowed(r) },
		func(r *http.Request) string { return gateway.ClientIP(r.Context()).String() },
		hubRedis,
		config.HubMetrics(opts.Metrics),
	)
	if err != nil {
		logger.Error("websocket hub", "error", err.Error())
		return 1
	}
	opts.Hub = hb
	g, err = newGateway(c, logger, opts)
	if err != nil {
		logger.Error("invalid configuration", "error", err.Error())
		return 1
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one ends the process at once.
		<-ctx.Done()
		stop()
	}()

	if *demo {
		addrs := map[string][]string{}
		for name, svc := range c.Services {
			for _, in := range svc.Instances {
				u, err := url.Parse(in.URL)
				if err == nil && isLoopbackHost(u.Hostname()) {
					addrs[name] = append(addrs[name], u.Host)
				}
			}
		}
		stopDemo, err := gatewaytest.Demo(addrs)
		if err != nil {
			logger.Error("demo backends", "error", err.Error())
			return 1
		}
		defer stopDemo()
		logger.Info("demo backends started", "services", len(addrs))
		fmt.Fprintf(stderr, "\ndemo: an admin token for this process (printed once, never logged):\n  export TOKEN=%s\n  curl -H \"Authorization: Bearer $TOKEN\" localhost:%d/api/v1/workspaces\n\n", demoToken, c.Server.Port)
	}

	ln, err := net.Listen("tcp", c.Addr())
	if err != nil {
		logger.Error("listen", "addr", c.Addr(), "error", err.Error())
		return 1
	}
	adminLn, err := net.Listen("tcp", c.AdminAddr())
	if err != nil {
		ln.Close()
		logger.Error("admin listen", "addr", c.AdminAddr(), "error", err.Error())
		return 1
	}
	path := configPath(*file)
	reloader := config.NewReloader(path, c, g, opts)
	reloader.Logger = logger
	reloader.OnResult = func(err error) { opts.Metrics.ConfigReload(err == nil, time.Now()) }
	reloader.Apply = func(next *config.Config) {
		var level slog.Level
		level.UnmarshalText([]byte(next.Log.Level))
		logLevel.Set(level)
	}
	if path != "" {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					reloader.Reload()
				}
			}
		}()
		if c.HotReload {
			go config.Watch(ctx, path, 0, func() { reloader.Reload() })
		}
	}
	admin := &http.Server{Handler: adminHandler(c, g, registry, reloader), ReadHeaderTimeout: 10 * time.Second}
	go admin.Serve(adminLn)
	defer admin.Close()
	go registry.Run(ctx)

	logger.Info("api-gateway started", "version", buildVersion(), "addr", ln.Addr().String(),
		"admin", adminLn.Addr().String(), "config", c.File, "environment", c.Server.Environment,
		"services", len(c.Services), "routes", len(c.Routes))
	if err := g.Serve(ctx, ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("serve", "error", err.Error())
		return 1
	}
	return 0
}

// adminAuthorized checks the admin API key (X-Admin-Key or a bearer
// token) in constant time. Without a configured key nothing is authorized.
func adminAuthorized(key string, r *http.Request) bool {
	if key == "" {
		return false
	}
	got := r.Header.Get("X-Admin-Key")
	if got == "" {
		got, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(key))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// adminHandler serves the operator endpoints on the admin port.
func adminHandler(c *config.Config, g *gateway.Gateway, registry *discovery.Registry, reloader *config.Reloader) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/registry/", registry)
	if m := reloader.Options.MetricsHandler; m != nil {
		mux.Handle("GET /metrics", m)
	}
	mux.HandleFunc("POST /admin/reload", func(w http.ResponseWriter, r *http.Request) {
		if !adminAuthorized(c.Admin.APIKey, r) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			gateway.WriteProblem(w, r, gateway.ProblemUnauthorized)
			return
		}
		if reloader.Path == "" {
			p := gateway.ProblemBadRequest
			p.Detail = "the gateway runs on its embedded configuration; there is no file to reload"
			gateway.WriteProblem(w, r, p)
			return
		}
		if err := reloader.Reload(); err != nil {
			p := gateway.Problem{Type: "invalid-config", Title: "Configuration refused", Status: http.StatusUnprocessableEntity, Detail: err.Error()}
			gateway.WriteProblem(w, r, p)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"status\":\"reloaded\",\"generation\":%d}\n", g.Generation())
	})
	for _, p := range []string{gateway.PathHealth, gateway.PathLive, gateway.PathReady, gateway.PathHealthDetailed} {
		mux.Handle("GET "+p, g)
	}
	if c.Admin.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

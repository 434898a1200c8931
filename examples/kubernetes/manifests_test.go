package kubernetes_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/config"
)

// What the manifests promise. The ports, paths and shutdown timings are
// not here: they come from the binary's own packages.
const (
	gatewayName   = "api-gateway" // Deployment, container, Service and PDB
	configMapName = "api-gateway-config"
	configKey     = "config.yaml"
	imageUID      = 65534 // the Dockerfile's USER
	replicas      = 3
	// graceMargin is the least time left after shutdown_delay +
	// shutdown_timeout before the kubelet's SIGKILL.
	graceMargin = 5 * time.Second
)

// wantResources are the gateway container's requests and limits.
var wantResources = map[string]map[string]string{
	"requests": {"cpu": "100m", "memory": "64Mi"},
	"limits":   {"cpu": "1000m", "memory": "256Mi"},
}

// Environment variables the gateway container may set: the binary's
// overrides, the file to load, and Go runtime knobs.
var goRuntimeEnv = []string{"GATEWAY_CONFIG", "GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

// The subset of the Kubernetes schema the checks read. Decoding is not
// strict: these types are not the full API.
type (
	meta struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	}
	object struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   meta   `yaml:"metadata"`
		pos        string // file:line
	}
	selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	deployment struct {
		Spec struct {
			Replicas *int     `yaml:"replicas"`
			Selector selector `yaml:"selector"`
			Template struct {
				Metadata meta    `yaml:"metadata"`
				Spec     podSpec `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds *int            `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               securityContext `yaml:"securityContext"`
		Containers                    []container     `yaml:"containers"`
		InitContainers                []container     `yaml:"initContainers"`
		Volumes                       []volume        `yaml:"volumes"`
	}
	securityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		RunAsUser                *int  `yaml:"runAsUser"`
		RunAsGroup               *int  `yaml:"runAsGroup"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Privileged               *bool `yaml:"privileged"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
		SeccompProfile *struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	}
	container struct {
		Name  string `yaml:"name"`
		Image string `yaml:"image"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Env []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *keyRef `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Resources       map[string]map[string]string `yaml:"resources"`
		SecurityContext securityContext              `yaml:"securityContext"`
		LivenessProbe   *probe                       `yaml:"livenessProbe"`
		ReadinessProbe  *probe                       `yaml:"readinessProbe"`
		VolumeMounts    []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			SubPath   string `yaml:"subPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	keyRef struct {
		Name string `yaml:"name"`
		Key  string `yaml:"key"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"` // a number or a port name
		} `yaml:"httpGet"`
		PeriodSeconds    int `yaml:"periodSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
	}
	volume struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name  string `yaml:"name"`
			Items []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"configMap"`
	}
	service struct {
		Spec struct {
			Type      string            `yaml:"type"`
			ClusterIP string            `yaml:"clusterIP"`
			Selector  map[string]string `yaml:"selector"`
			Ports     []servicePort     `yaml:"ports"`
		} `yaml:"spec"`
	}
	servicePort struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort string `yaml:"targetPort"` // a number or a port name
	}
	pdb struct {
		Spec struct {
			MinAvailable   string   `yaml:"minAvailable"`
			MaxUnavailable string   `yaml:"maxUnavailable"`
			Selector       selector `yaml:"selector"`
		} `yaml:"spec"`
	}
	configMap struct {
		Data map[string]string `yaml:"data"`
	}
	secret struct {
		StringData map[string]string `yaml:"stringData"`
	}
	kustomization struct {
		Resources []string `yaml:"resources"`
	}
)

// set is every manifest of the directory, decoded.
type set struct {
	files       map[string][]*object
	objects     []*object
	namespace   string
	deployments map[string]*deployment
	services    map[string]*service
	pdbs        map[string]*pdb
	configMaps  map[string]*configMap
	secrets     map[string]*secret
	kustomize   *kustomization

	// The gateway's configuration as the binary would load it in the
	// cluster: the ConfigMap's file with the Deployment's environment.
	cfg    *config.Config
	cfgErr error
}

// apiVersions is the API version of every kind the manifests may use.
var apiVersions = map[string]string{
	"Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1",
	"Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
	"Kustomization": "kustomize.config.k8s.io/v1beta1",
}

// readDir returns the YAML files of dir by name.
func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	files := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(n)] = b
	}
	return files
}

// parse decodes every document of every file (multi-document aware).
func parse(files map[string][]byte) (*set, error) {
	s := &set{
		files:       map[string][]*object{},
		deployments: map[string]*deployment{},
		services:    map[string]*service{},
		pdbs:        map[string]*pdb{},
		configMaps:  map[string]*configMap{},
		secrets:     map[string]*secret{},
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(files)) {
		dec := yaml.NewDecoder(bytes.NewReader(files[name]))
		for {
			var n yaml.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				break
			}
			if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
				continue // an empty document (a trailing ---, say)
			}
			o := &object{pos: fmt.Sprintf("%s:%d", name, n.Content[0].Line)}
			if err := n.Decode(o); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", o.pos, err))
				continue
			}
			s.files[name] = append(s.files[name], o)
			s.objects = append(s.objects, o)
			var into any
			switch o.Kind {
			case "Namespace":
				s.namespace = o.Metadata.Name
			case "Deployment":
				d := &deployment{}
				s.deployments[o.Metadata.Name], into = d, d
			case "Service":
				v := &service{}
				s.services[o.Metadata.Name], into = v, v
			case "PodDisruptionBudget":
				v := &pdb{}
				s.pdbs[o.Metadata.Name], into = v, v
			case "ConfigMap":
				v := &configMap{}
				s.configMaps[o.Metadata.Name], into = v, v
			case "Secret":
				v := &secret{}
				s.secrets[o.Metadata.Name], into = v, v
			case "Kustomization":
				s.kustomize = &kustomization{}
				into = s.kustomize
			}
			if into != nil {
				if err := n.Decode(into); err != nil {
					errs = append(errs, fmt.Errorf("%s: %s %s: %w", o.pos, o.Kind, o.Metadata.Name, err))
				}
			}
		}
	}
	s.cfg, s.cfgErr = s.gatewayConfig()
	return s, errors.Join(errs...)
}

// gateway returns the gateway Deployment and its container.
func (s *set) gateway() (*deployment, *container) {
	d := s.deployments[gatewayName]
	if d == nil {
		return nil, nil
	}
	for i, c := range d.Spec.Template.Spec.Containers {
		if c.Name == gatewayName {
			return d, &d.Spec.Template.Spec.Containers[i]
		}
	}
	return d, nil
}

// env resolves the gateway container's environment: literal values, and
// Secret references from the example Secret.
func (s *set) env() map[string]string {
	_, c := s.gateway()
	env := map[string]string{}
	if c == nil {
		return env
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			if sec := s.secrets[e.ValueFrom.SecretKeyRef.Name]; sec != nil {
				if v, ok := sec.StringData[e.ValueFrom.SecretKeyRef.Key]; ok {
					env[e.Name] = v
				}
			}
		default:
			env[e.Name] = e.Value
		}
	}
	return env
}

// gatewayConfig parses the ConfigMap's configuration the way the binary
// loads it in a pod, and builds the gateway from it as `api-gateway check`
// does.
func (s *set) gatewayConfig() (*config.Config, error) {
	cm := s.configMaps[configMapName]
	if cm == nil {
		return nil, fmt.Errorf("no ConfigMap %s", configMapName)
	}
	data, ok := cm.Data[configKey]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no key %s", configMapName, configKey)
	}
	env := s.env()
	c, err := config.Parse(configKey, []byte(data), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		return nil, err
	}
	gc, err := c.Gateway()
	if err != nil {
		return nil, err
	}
	if _, err := gateway.New(gc); err != nil {
		return nil, err
	}
	return c, nil
}

// problems collects what one check found.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

type check struct {
	name string
	run  func(s *set, p *problems)
}

// checks are independent so that a test can show each one failing.
var checks = []check{
	{"files", checkFiles},
	{"objects", checkObjects},
	{"config", checkConfig},
	{"replicas", checkReplicas},
	{"ports", checkPorts},
	{"probes", checkProbes},
	{"shutdown", checkShutdown},
	{"config-mount", checkConfigMount},
	{"env", checkEnv},
	{"security", checkSecurity},
	{"resources", checkResources},
	{"service", checkService},
	{"pdb", checkPDB},
	{"redis", checkRedis},
	{"discovery", checkDiscovery},
}

func checkFiles(s *set, p *problems) {
	want := map[string][]string{
		"namespace.yaml":        {"Namespace"},
		"configmap.yaml":        {"ConfigMap"},
		"deployment.yaml":       {"Deployment"},
		"service.yaml":          {"Service"},
		"pdb.yaml":              {"PodDisruptionBudget"},
		"redis.yaml":            {"Deployment", "Service"},
		"backend-headless.yaml": {"Service"},
		"secret.example.yaml":   {"Secret"},
		"kustomization.yaml":    {"Kustomization"},
	}
	for file, kinds := range want {
		var got []string
		for _, o := range s.files[file] {
			got = append(got, o.Kind)
		}
		if !slices.Equal(got, kinds) {
			p.add("%s holds %q, want %q", file, got, kinds)
		}
	}
	for file := range s.files {
		if _, ok := want[file]; !ok {
			p.add("%s is not a known manifest; add it to checkFiles and README.md", file)
		}
	}
	// `kubectl apply -k` applies every manifest but the example Secret.
	var wantRes []string
	for file := range want {
		if file != "secret.example.yaml" && file != "kustomization.yaml" {
			wantRes = append(wantRes, file)
		}
	}
	slices.Sort(wantRes)
	if s.kustomize == nil {
		p.add("no kustomization.yaml")
	} else if got := slices.Sorted(slices.Values(s.kustomize.Resources)); !slices.Equal(got, wantRes) {
		p.add("kustomization.yaml resources = %q, want %q", got, wantRes)
	}
}

func checkObjects(s *set, p *problems) {
	if s.namespace == "" {
		p.add("no Namespace object")
	}
	seen := map[string]string{}
	for _, o := range s.objects {
		want, ok := apiVersions[o.Kind]
		switch {
		case !ok:
			p.add("%s: kind %q is not one the checks know", o.pos, o.Kind)
		case o.APIVersion != want:
			p.add("%s: %s has apiVersion %q, want %q", o.pos, o.Kind, o.APIVersion, want)
		}
		if o.Kind == "Kustomization" {
			continue // not an API object: no name, no namespace
		}
		if o.Metadata.Name == "" {
			p.add("%s: %s has no metadata.name", o.pos, o.Kind)
		}
		if o.Kind != "Namespace" && o.Metadata.Namespace != s.namespace {
			p.add("%s: %s %s is in namespace %q, want %q", o.pos, o.Kind, o.Metadata.Name, o.Metadata.Namespace, s.namespace)
		}
		key := o.Kind + "/" + o.Metadata.Name
		if prev, dup := seen[key]; dup {
			p.add("%s: %s is also defined at %s", o.pos, key, prev)
		}
		seen[key] = o.pos
	}
}

func checkConfig(s *set, p *problems) {
	if s.cfgErr != nil {
		p.add("the ConfigMap's %s, with the Deployment's environment, is refused by the binary:\n%v", configKey, s.cfgErr)
		return
	}
	c := s.cfg
	for _, tc := range []struct {
		what string
		ok   bool
	}{
		{"hot_reload is on", c.HotReload},
		{"server.environment is production", c.Production()},
		{"admin.host is 0.0.0.0 (Prometheus scrapes the admin port)", c.Admin.Host == "0.0.0.0"},
		{"metrics are enabled", c.MetricsEnabled()},
		{"rate limiting is on", c.Security.RateLimit.Enabled},
		{"rate limits are shared in Redis (REDIS_URL)", c.Security.RateLimit.RedisURL != ""},
		{"the WebSocket hub is on", c.WebSocket.Hub.Enabled},
		{"auth.jwt_secret comes from JWT_SECRET, not the file", !strings.Contains(s.configMaps[configMapName].Data[configKey], s.env()["JWT_SECRET"])},
	} {
		if !tc.ok {
			p.add("config: want %s", tc.what)
		}
	}
}

func checkReplicas(s *set, p *problems) {
	d, _ := s.gateway()
	if d == nil {
		p.add("no Deployment %s", gatewayName)
		return
	}
	if r := d.Spec.Replicas; r == nil || *r != replicas {
		p.add("Deployment %s: replicas = %v, want %d", gatewayName, deref(r), replicas)
	}
}

func checkPorts(s *set, p *problems) {
	d, c := s.gateway()
	if c == nil || s.cfg == nil {
		p.add("no gateway container or no valid config")
		return
	}
	want := map[string]int{"http": s.cfg.Server.Port, "admin": s.cfg.Admin.Port}
	got := map[string]int{}
	for _, cp := range c.Ports {
		got[cp.Name] = cp.ContainerPort
	}
	if !maps.Equal(got, want) {
		p.add("container ports = %v, want %v (server.port, admin.port)", got, want)
	}
	a := d.Spec.Template.Metadata.Annotations
	if a["prometheus.io/port"] != strconv.Itoa(s.cfg.Admin.Port) || a["prometheus.io/path"] != gateway.PathMetrics || a["prometheus.io/scrape"] != "true" {
		p.add("prometheus annotations = %v, want scrape on admin port %d at %s", a, s.cfg.Admin.Port, gateway.PathMetrics)
	}
}

// containerPort resolves a probe's or Service's port (a number or a port
// name) to the container's port number.
func containerPort(c *container, port string) int {
	for _, cp := range c.Ports {
		if cp.Name == port {
			return cp.ContainerPort
		}
	}
	n, _ := strconv.Atoi(port)
	return n
}

func checkProbes(s *set, p *problems) {
	_, c := s.gateway()
	if c == nil || s.cfg == nil {
		p.add("no gateway container or no valid config")
		return
	}
	for _, tc := range []struct {
		name  string
		probe *probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, gateway.PathLive},
		{"readinessProbe", c.ReadinessProbe, gateway.PathReady},
	} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			p.add("%s: want an httpGet probe of %s", tc.name, tc.path)
			continue
		}
		if got := tc.probe.HTTPGet.Path; got != tc.path {
			p.add("%s path = %q, want %q", tc.name, got, tc.path)
		}
		if got := containerPort(c, tc.probe.HTTPGet.Port); got != s.cfg.Server.Port {
			p.add("%s port %q = %d, want the main port %d", tc.name, tc.probe.HTTPGet.Port, got, s.cfg.Server.Port)
		}
	}
}

func checkShutdown(s *set, p *problems) {
	d, c := s.gateway()
	if c == nil || s.cfg == nil {
		p.add("no gateway container or no valid config")
		return
	}
	delay, timeout := s.cfg.Server.ShutdownDelay.D(), s.cfg.Server.ShutdownTimeout.D()
	g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if want := delay + timeout + graceMargin; g == nil || time.Duration(*g)*time.Second < want {
		p.add("terminationGracePeriodSeconds = %v, want at least %v (shutdown_delay %v + shutdown_timeout %v + %v)", deref(g), want.Seconds(), delay, timeout, graceMargin)
	}
	// The endpoint must be seen unready while the listener still accepts.
	if r := c.ReadinessProbe; r != nil {
		period, failures := max(r.PeriodSeconds, 1), max(r.FailureThreshold, 1)
		if notice := time.Duration(period*failures) * time.Second; notice >= delay {
			p.add("readinessProbe notices draining after up to %v (period × failureThreshold), want less than shutdown_delay %v", notice, delay)
		}
	}
}

func checkConfigMount(s *set, p *problems) {
	d, c := s.gateway()
	if c == nil {
		p.add("no gateway container")
		return
	}
	env := s.env()
	var vol *volume
	for i, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == configMapName {
			vol = &d.Spec.Template.Spec.Volumes[i]
		}
	}
	if vol == nil {
		p.add("no volume of ConfigMap %s", configMapName)
		return
	}
	file := configKey
	for _, it := range vol.ConfigMap.Items {
		if it.Key == configKey {
			file = it.Path
		}
	}
	var mounts []string
	for _, m := range c.VolumeMounts {
		if m.Name != vol.Name {
			continue
		}
		if m.SubPath != "" {
			p.add("volume %s is mounted with subPath %q: the kubelet never updates such a mount, so hot reload would never see a change", vol.Name, m.SubPath)
		}
		if !m.ReadOnly {
			p.add("volume %s is mounted read-write, want readOnly", vol.Name)
		}
		mounts = append(mounts, m.MountPath+"/"+file)
	}
	if got := env["GATEWAY_CONFIG"]; !slices.Contains(mounts, got) {
		p.add("GATEWAY_CONFIG = %q, want the mounted ConfigMap key, one of %q", got, mounts)
	}
}

func checkEnv(s *set, p *problems) {
	_, c := s.gateway()
	if c == nil {
		p.add("no gateway container")
		return
	}
	known := slices.Clone(goRuntimeEnv)
	for _, e := range config.EnvOverrides() {
		known = append(known, e[0])
	}
	for _, e := range c.Env {
		if !slices.Contains(known, e.Name) {
			p.add("env %s is read by nothing (the binary knows %v)", e.Name, known)
		}
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			if e.Name == "JWT_SECRET" || e.Name == "ADMIN_API_KEY" {
				p.add("env %s is written in the Deployment; take it from a Secret", e.Name)
			}
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if sec := s.secrets[ref.Name]; sec == nil {
			p.add("env %s refers to Secret %q, which secret.example.yaml does not define", e.Name, ref.Name)
		} else if _, ok := sec.StringData[ref.Key]; !ok {
			p.add("env %s refers to key %q of Secret %s, which has %v", e.Name, ref.Key, ref.Name, slices.Sorted(maps.Keys(sec.StringData)))
		}
	}
}

// checkSecurity holds every pod to the restricted Pod Security Standard
// the namespace enforces, and the gateway to the image's user and a
// read-only root.
func checkSecurity(s *set, p *problems) {
	if len(s.deployments) == 0 {
		p.add("no Deployments")
	}
	for _, name := range slices.Sorted(maps.Keys(s.deployments)) {
		pod := s.deployments[name].Spec.Template.Spec
		for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
			at := fmt.Sprintf("Deployment %s container %s", name, c.Name)
			sc, ps := c.SecurityContext, pod.SecurityContext
			nonRoot := orBool(sc.RunAsNonRoot, ps.RunAsNonRoot)
			uid := orInt(sc.RunAsUser, ps.RunAsUser)
			if !nonRoot || uid == nil || *uid == 0 {
				p.add("%s: want runAsNonRoot: true and a numeric non-zero runAsUser", at)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				p.add("%s: want allowPrivilegeEscalation: false", at)
			}
			if sc.Privileged != nil && *sc.Privileged {
				p.add("%s: privileged", at)
			}
			if !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				p.add("%s: capabilities drop %v add %v, want drop [ALL] and nothing added", at, sc.Capabilities.Drop, sc.Capabilities.Add)
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = ps.SeccompProfile
			}
			if seccomp == nil || (seccomp.Type != "RuntimeDefault" && seccomp.Type != "Localhost") {
				p.add("%s: want seccompProfile RuntimeDefault", at)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				p.add("%s: want readOnlyRootFilesystem: true", at)
			}
			if name == gatewayName {
				gid := orInt(sc.RunAsGroup, ps.RunAsGroup)
				if uid == nil || *uid != imageUID || gid == nil || *gid != imageUID {
					p.add("%s: runs as %v:%v, want the image's %d:%d", at, deref(uid), deref(gid), imageUID, imageUID)
				}
			}
		}
	}
}

func checkResources(s *set, p *problems) {
	_, c := s.gateway()
	if c == nil {
		p.add("no gateway container")
		return
	}
	for kind, want := range wantResources {
		for res, q := range want {
			got := c.Resources[kind][res]
			g, err1 := quantity(got)
			w, err2 := quantity(q)
			if err1 != nil || err2 != nil || g != w {
				p.add("resources.%s.%s = %q, want %s", kind, res, got, q)
			}
		}
	}
	limit, err := quantity(c.Resources["limits"]["memory"])
	if err != nil {
		return
	}
	soft, err := goMemLimit(s.env()["GOMEMLIMIT"])
	if err != nil || soft >= limit || soft < limit*8/10 {
		p.add("GOMEMLIMIT = %q (%v), want 80-99%% of the memory limit %d bytes", s.env()["GOMEMLIMIT"], err, limit)
	}
}

func checkService(s *set, p *problems) {
	d, c := s.gateway()
	svc := s.services[gatewayName]
	if svc == nil || c == nil || s.cfg == nil {
		p.add("no Service %s, gateway container or valid config", gatewayName)
		return
	}
	if svc.Spec.Type != "" && svc.Spec.Type != "ClusterIP" {
		p.add("Service %s type %q, want ClusterIP", gatewayName, svc.Spec.Type)
	}
	if !selects(svc.Spec.Selector, d.Spec.Template.Metadata.Labels) {
		p.add("Service %s selector %v does not select the gateway pods %v", gatewayName, svc.Spec.Selector, d.Spec.Template.Metadata.Labels)
	}
	if len(svc.Spec.Ports) != 1 {
		p.add("Service %s has %d ports, want 1 (the admin port stays private)", gatewayName, len(svc.Spec.Ports))
		return
	}
	tp := svc.Spec.Ports[0].TargetPort
	if tp == "" {
		tp = strconv.Itoa(svc.Spec.Ports[0].Port)
	}
	if got := containerPort(c, tp); got != s.cfg.Server.Port {
		p.add("Service %s targetPort %q = %d, want the main port %d", gatewayName, tp, got, s.cfg.Server.Port)
	}
	// The Deployment's selector must match its own template, and nothing
	// else here may carry the same labels.
	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		p.add("Deployment %s selector %v does not match its pod labels", gatewayName, d.Spec.Selector.MatchLabels)
	}
	for name, other := range s.deployments {
		if name != gatewayName && selects(svc.Spec.Selector, other.Spec.Template.Metadata.Labels) {
			p.add("Service %s also selects the pods of Deployment %s", gatewayName, name)
		}
	}
}

func checkPDB(s *set, p *problems) {
	d, _ := s.gateway()
	b := s.pdbs[gatewayName]
	if b == nil || d == nil {
		p.add("no PodDisruptionBudget or Deployment %s", gatewayName)
		return
	}
	if !selects(b.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		p.add("PDB selector %v does not select the gateway pods %v", b.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
	}
	for name, other := range s.deployments {
		if name != gatewayName && selects(b.Spec.Selector.MatchLabels, other.Spec.Template.Metadata.Labels) {
			p.add("PDB %s also selects the pods of Deployment %s", gatewayName, name)
		}
	}
	ok := (b.Spec.MaxUnavailable == "1" && b.Spec.MinAvailable == "") ||
		(b.Spec.MinAvailable == strconv.Itoa(replicas-1) && b.Spec.MaxUnavailable == "")
	if !ok {
		p.add("PDB minAvailable %q maxUnavailable %q, want maxUnavailable 1 or minAvailable %d", b.Spec.MinAvailable, b.Spec.MaxUnavailable, replicas-1)
	}
}

// checkRedis follows REDIS_URL to the Redis Service and its pods.
func checkRedis(s *set, p *problems) {
	u, err := url.Parse(s.env()["REDIS_URL"])
	if err != nil || u.Scheme != "redis" {
		p.add("REDIS_URL %q is not a redis:// URL", s.env()["REDIS_URL"])
		return
	}
	name, ns := serviceDNS(u.Hostname())
	svc := s.services[name]
	if svc == nil || (ns != "" && ns != s.namespace) {
		p.add("REDIS_URL host %q names no Service here (want <service>.%s.svc.cluster.local)", u.Hostname(), s.namespace)
		return
	}
	port, _ := strconv.Atoi(u.Port())
	d := s.deployments[name]
	if d == nil || len(d.Spec.Template.Spec.Containers) == 0 {
		p.add("no Deployment %s behind Service %s", name, name)
		return
	}
	if !selects(svc.Spec.Selector, d.Spec.Template.Metadata.Labels) {
		p.add("Service %s does not select the pods of Deployment %s", name, name)
	}
	c := &d.Spec.Template.Spec.Containers[0]
	for _, sp := range svc.Spec.Ports {
		if sp.Port == port && containerPort(c, sp.TargetPort) == 6379 {
			return
		}
	}
	p.add("REDIS_URL port %d does not reach port 6379 of the redis container through Service %s", port, name)
}

// checkDiscovery matches each DNS-discovered service of the config to a
// headless Service here.
func checkDiscovery(s *set, p *problems) {
	if s.cfg == nil {
		p.add("no valid config")
		return
	}
	found := 0
	for _, name := range s.cfg.ServiceNames() {
		d := s.cfg.Services[name].Discovery
		if d == nil || d.Type != "dns" {
			continue
		}
		found++
		svcName, ns := serviceDNS(d.Name)
		svc := s.services[svcName]
		switch {
		case ns != s.namespace || svc == nil:
			p.add("services.%s.discovery.name %q is not <service>.%s.svc.cluster.local. of a Service here", name, d.Name, s.namespace)
		case svc.Spec.ClusterIP != "None":
			p.add("Service %s (discovered by services.%s) has clusterIP %q: its DNS name would give one virtual IP, not the pods; want clusterIP: None", svcName, name, svc.Spec.ClusterIP)
		case !slices.ContainsFunc(svc.Spec.Ports, func(sp servicePort) bool {
			return sp.TargetPort == strconv.Itoa(d.Port) || (sp.TargetPort == "" && sp.Port == d.Port)
		}):
			// A records carry no port: the gateway dials the pods'
			// target port directly.
			p.add("services.%s.discovery.port %d is no targetPort of headless Service %s", name, d.Port, svcName)
		}
	}
	if found == 0 {
		p.add("config: no service uses DNS discovery")
	}
}

// serviceDNS splits a cluster DNS name "svc.ns.svc.cluster.local[.]" into
// the Service and namespace ("" for a bare Service name).
func serviceDNS(host string) (name, ns string) {
	host = strings.TrimSuffix(host, ".")
	if net.ParseIP(host) != nil {
		return "", ""
	}
	parts := strings.Split(host, ".")
	switch {
	case len(parts) == 1:
		return parts[0], ""
	case len(parts) == 5 && parts[2] == "svc" && parts[3] == "cluster" && parts[4] == "local",
		len(parts) == 3 && parts[2] == "svc":
		return parts[0], parts[1]
	}
	return "", ""
}

// selects reports whether a non-empty selector matches labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// quantity parses the Kubernetes quantities used here: CPU in cores or
// millicores (returned in millicores), memory in bytes with binary or
// decimal suffixes (returned in bytes).
func quantity(q string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"m", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	v, err := strconv.ParseInt(q, 10, 64)
	return v * 1000, err // whole CPUs; a memory quantity always has a suffix here
}

// goMemLimit parses GOMEMLIMIT as the Go runtime does (bytes, or a
// B/KiB/MiB/GiB suffix).
func goMemLimit(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func orBool(a, b *bool) bool {
	if a != nil {
		return *a
	}
	return b != nil && *b
}

func orInt(a, b *int) *int {
	if a != nil {
		return a
	}
	return b
}

func deref(p *int) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func TestManifests(t *testing.T) {
	// gateway.New (as `api-gateway check` runs it) must start nothing.
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		n := runtime.NumGoroutine()
		for i := 0; i < 50 && n > before; i++ {
			time.Sleep(20 * time.Millisecond) // let finished ones exit
			n = runtime.NumGoroutine()
		}
		if n > before {
			t.Errorf("goroutines = %d after building the gateway, want at most %d", n, before)
		}
	})
	s, err := parse(readDir(t, "."))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			var p problems
			c.run(s, &p)
			for _, msg := range p {
				t.Error(msg)
			}
		})
	}
}

// TestChecksCatchBrokenManifests breaks the manifests one way at a time
// and wants the named check to notice: a check that cannot fail is no
// check.
func TestChecksCatchBrokenManifests(t *testing.T) {
	files := readDir(t, ".")
	tests := []struct {
		check, file, old, new string
	}{
		{"files", "pdb.yaml", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgets"},
		{"files", "kustomization.yaml", "  - pdb.yaml\n", ""},
		{"files", "kustomization.yaml", "  - pdb.yaml\n", "  - pdb.yaml\n  - secret.example.yaml\n"},
		{"objects", "service.yaml", "namespace: api-gateway", "namespace: default"},
		{"objects", "pdb.yaml", "apiVersion: policy/v1", "apiVersion: policy/v1beta1"},
		{"config", "configmap.yaml", "hot_reload: true", "hot_reload: false"},
		{"config", "configmap.yaml", "port: 9090", "port: 8080"}, // the binary refuses it
		{"config", "configmap.yaml", "      host: \"0.0.0.0\"                # reachable", "      host: \"127.0.0.1\"  # reachable"},
		{"config", "configmap.yaml", "    hot_reload: true", "    hot_reload: true\n    hot_reloda: true"},
		{"config", "secret.example.yaml", "REPLACE-ME-with-32-or-more-random-bytes-0123456789", "short"},
		{"config", "deployment.yaml", "key: jwt-secret", "key: jwt"},
		{"replicas", "deployment.yaml", "replicas: 3", "replicas: 2"},
		{"ports", "deployment.yaml", "containerPort: 9090", "containerPort: 9091"},
		{"ports", "deployment.yaml", `prometheus.io/port: "9090"`, `prometheus.io/port: "8080"`},
		{"probes", "deployment.yaml", "path: /live", "path: /health/detailed"},
		{"probes", "deployment.yaml", "path: /ready\n              port: http", "path: /ready\n              port: admin"},
		{"shutdown", "deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 30"},
		{"shutdown", "configmap.yaml", "shutdown_timeout: 30s", "shutdown_timeout: 60s"},
		{"shutdown", "deployment.yaml", "periodSeconds: 2", "periodSeconds: 10"},
		{"config-mount", "deployment.yaml", "value: /etc/api-gateway/config.yaml", "value: /etc/api-gateway/gateway.yaml"},
		{"config-mount", "deployment.yaml", "mountPath: /etc/api-gateway\n", "mountPath: /etc/api-gateway/config.yaml\n              subPath: config.yaml\n"},
		{"config-mount", "deployment.yaml", "readOnly: true", "readOnly: false"},
		{"env", "deployment.yaml", "name: GOMEMLIMIT", "name: GO_MEMLIMIT"},
		{"env", "deployment.yaml", "name: api-gateway-secrets\n                  key: admin-api-key", "name: api-gateway-secrets\n                  key: admin-key"},
		{"security", "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"},
		{"security", "deployment.yaml", "runAsUser: 65534\n            runAsGroup", "runAsUser: 1000\n            runAsGroup"},
		{"security", "deployment.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"},
		{"security", "redis.yaml", "drop: [ALL]", "drop: [NET_RAW]"},
		{"security", "redis.yaml", "runAsNonRoot: true", "runAsNonRoot: false"},
		{"resources", "deployment.yaml", "memory: 256Mi", "memory: 512Mi"},
		{"resources", "deployment.yaml", "cpu: 100m", "cpu: 200m"},
		{"resources", "deployment.yaml", "value: 230MiB", "value: 300MiB"},
		{"service", "service.yaml", "targetPort: http", "targetPort: admin"},
		{"service", "service.yaml", "app.kubernetes.io/name: api-gateway\n  ports", "app.kubernetes.io/name: gateway\n  ports"},
		{"pdb", "pdb.yaml", "      app.kubernetes.io/name: api-gateway", "      app.kubernetes.io/name: redis"},
		{"pdb", "pdb.yaml", "maxUnavailable: 1", "maxUnavailable: 2"},
		{"redis", "deployment.yaml", "redis.api-gateway.svc.cluster.local:6379", "cache.api-gateway.svc.cluster.local:6379"},
		{"redis", "deployment.yaml", "redis.api-gateway.svc.cluster.local:6379", "redis.api-gateway.svc.cluster.local:6380"},
		{"discovery", "backend-headless.yaml", "  clusterIP: None", "  clusterIP: \"\""},
		{"discovery", "backend-headless.yaml", "targetPort: 8080", "targetPort: 8000"},
		{"discovery", "configmap.yaml", "name: records.api-gateway.svc", "name: records.default.svc"},
	}
	byName := map[string]check{}
	for _, c := range checks {
		byName[c.name] = c
		if !slices.ContainsFunc(tests, func(tc struct{ check, file, old, new string }) bool { return tc.check == c.name }) {
			t.Errorf("check %s is never shown to fail; add a mutation for it", c.name)
		}
	}
	for _, tc := range tests {
		t.Run(tc.check+"/"+tc.file+"/"+firstLine(tc.new), func(t *testing.T) {
			c, ok := byName[tc.check]
			if !ok {
				t.Fatalf("no check %q", tc.check)
			}
			broken := maps.Clone(files)
			if n := bytes.Count(broken[tc.file], []byte(tc.old)); n != 1 {
				t.Fatalf("%s contains %q %d times, want once; update the mutation", tc.file, tc.old, n)
			}
			broken[tc.file] = bytes.Replace(broken[tc.file], []byte(tc.old), []byte(tc.new), 1)
			s, err := parse(broken)
			if err != nil {
				t.Fatalf("broken manifests do not parse: %v", err)
			}
			var p problems
			c.run(s, &p)
			if len(p) == 0 {
				t.Errorf("check %s found nothing wrong after %s: %q → %q", tc.check, tc.file, tc.old, tc.new)
			}
		})
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.Join(strings.Fields(s), "_")
}

// Example loads the ConfigMap's configuration as a gateway pod does: the
// file, then the environment the Deployment sets (here a stand-in secret).
func Example() {
	b, err := os.ReadFile("configmap.yaml")
	if err != nil {
		panic(err)
	}
	var cm configMap
	if err := yaml.Unmarshal(b, &cm); err != nil {
		panic(err)
	}
	env := map[string]string{
		"JWT_SECRET": strings.Repeat("s", 32),
		"REDIS_URL":  "redis://redis.api-gateway.svc.cluster.local:6379/0",
	}
	c, err := config.Parse(configKey, []byte(cm.Data[configKey]), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("environment:", c.Server.Environment)
	fmt.Println("listen:", c.Addr(), "admin:", c.AdminAddr())
	fmt.Println("drain:", c.Server.ShutdownDelay.D()+c.Server.ShutdownTimeout.D())
	fmt.Println("hot reload:", c.HotReload)
	// Output:
	// environment: production
	// listen: 0.0.0.0:8080 admin: 0.0.0.0:9090
	// drain: 35s
	// hot reload: true
}

package balancer

import (
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// firstAvailable is a deterministic policy for tests: the first available
// instance, so that where a request lands shows whether a cookie counted.
type firstAvailable struct{}

func (firstAvailable) Pick(_ *http.Request, pool []*Instance) (*Instance, error) {
	for _, in := range pool {
		if in.Available() {
			return in, nil
		}
	}
	return nil, ErrNoInstance
}

func newSticky(t *testing.T, next Balancer, clk *testClock) *CookieSticky {
	t.Helper()
	s, err := NewCookieSticky(next, CookieSettings{Name: "pin", Secret: testSecret, TTL: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCookieStickyThroughProxy(t *testing.T) {
	checkNoGoroutineLeak(t)
	bs := startBackends(t, 1, 1, 1)
	pool := instancesOf(bs)
	clk := newTestClock()
	proxy := startProxy(t, newSticky(t, &RoundRobin{}, clk), func() []*Instance { return pool })
	jar, _ := cookiejar.New(nil)
	c := newClient(t, jar)
	request := func() (string, *http.Response) {
		req, _ := http.NewRequest(http.MethodGet, proxy.URL, nil)
		return get(t, c, req)
	}

	first, resp := request()
	if len(resp.Cookies()) != 1 {
		t.Fatalf("first response sets %d cookies, want 1", len(resp.Cookies()))
	}
	if v := resp.Cookies()[0].Value; strings.Contains(v, "127.0.0.1") {
		t.Errorf("cookie %q reveals the backend address", v)
	}
	// Round robin alone would rotate; the pin holds for 1000 requests. At
	// 2s a request the hour's pin is renewed once, at half time.
	renewals := 0
	for i := range 1000 {
		clk.Advance(2 * time.Second)
		got, resp := request()
		if got != first {
			t.Fatalf("request %d went to %s, want pinned %s", i, got, first)
		}
		renewals += len(resp.Cookies())
	}
	if renewals != 1 {
		t.Errorf("%d renewals over 2000s of a 1h pin, want 1", renewals)
	}

	// The pinned backend leaves rotation: the client is re-pinned once,
	// then stays on the new backend.
	pinned := bs[first[0]-'a']
	pinned.in.SetFlag(Draining, true)
	second, resp := request()
	if second == first || len(resp.Cookies()) != 1 {
		t.Fatalf("after draining %s: went to %s with %d cookies, want another backend and a new pin", first, second, len(resp.Cookies()))
	}
	for range 100 {
		if got, _ := request(); got != second {
			t.Fatalf("after re-pin: went to %s, want %s", got, second)
		}
	}
	// When the original comes back the client stays where it is now.
	pinned.in.SetFlag(Draining, false)
	if got, _ := request(); got != second {
		t.Errorf("after %s returned: went to %s, want to stay on %s", first, got, second)
	}
}

func TestCookieStickyRenewal(t *testing.T) {
	clk := newTestClock()
	pool := makePool(t, 3)
	s := newSticky(t, &RoundRobin{}, clk)
	in, cookie, err := s.PickSticky(httptest.NewRequest("GET", "/", nil), pool)
	if err != nil || cookie == nil {
		t.Fatalf("PickSticky() = %v, %v, %v; want an instance and a cookie", in, cookie, err)
	}
	if cookie.MaxAge != 3600 || !cookie.HttpOnly || cookie.Path != "/" || cookie.Name != "pin" {
		t.Errorf("cookie = %v, want pin=…; Path=/; Max-Age=3600; HttpOnly", cookie)
	}
	steps := []struct {
		after   time.Duration
		renewed bool
	}{
		{0, false},
		{29 * time.Minute, false},
		{31 * time.Minute, true}, // less than half the TTL left
	}
	for _, st := range steps {
		clk.Set(testClockStart.Add(st.after))
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(cookie)
		got, renewal, err := s.PickSticky(r, pool)
		if err != nil || got != in {
			t.Fatalf("after %v: PickSticky() = %v, %v; want pinned %v", st.after, got, err, in)
		}
		if (renewal != nil) != st.renewed {
			t.Errorf("after %v: renewal cookie = %v, want renewed=%v", st.after, renewal, st.renewed)
		}
	}
}

func TestCookieStickyIgnoresBadCookies(t *testing.T) {
	clk := newTestClock()
	pool := makePool(t, 3)
	s := newSticky(t, firstAvailable{}, clk)
	// A genuine pin to the third instance.
	ids := s.idsFor(pool)
	valid := s.cookie(ids.ids[2], clk.Now()).Value
	id, rest, _ := strings.Cut(valid, ".")
	exp, mac, _ := strings.Cut(rest, ".")
	other, err := NewCookieSticky(nil, CookieSettings{Name: "pin", Secret: []byte("another-secret-of-16+"), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	renamed, err := NewCookieSticky(nil, CookieSettings{Name: "other", Secret: testSecret, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		b[i] ^= 1
		return string(b)
	}
	tests := []struct {
		name   string
		header string // Cookie header
		now    time.Duration
		pinned bool
	}{
		{"valid", "pin=" + valid, 0, true},
		{"valid among others, quoted", `a=b; pin="` + valid + `"; c=d`, 0, true},
		{"valid after a bad one", "pin=garbage; pin=" + valid, 0, true},
		{"no cookie", "", 0, false},
		{"other name", "pinx=" + valid, 0, false},
		{"garbage", "pin=hello", 0, false},
		{"empty", "pin=", 0, false},
		{"id of another instance", "pin=" + ids.ids[1] + "." + exp + "." + mac, 0, false},
		{"id altered", "pin=" + flip(id, 3) + "." + exp + "." + mac, 0, false},
		{"expiry extended", "pin=" + id + "." + flip(exp, len(exp)-1) + "9." + mac, 0, false},
		{"mac altered", "pin=" + id + "." + exp + "." + flip(mac, 10), 0, false},
		{"mac truncated", "pin=" + valid[:len(valid)-1], 0, false},
		{"signed with another secret", "pin=" + other.cookie(ids.ids[2], clk.Now()).Value, 0, false},
		{"issued under another name", "pin=" + renamed.cookie(ids.ids[2], clk.Now()).Value, 0, false},
		{"expired", "pin=" + valid, time.Hour + time.Second, false},
		{"at expiry", "pin=" + valid, time.Hour, false},
	}
	for _, tt := range tests {
		clk.Set(testClockStart.Add(tt.now))
		r := httptest.NewRequest("GET", "/", nil)
		if tt.header != "" {
			r.Header.Set("Cookie", tt.header)
		}
		in, setCookie, err := s.PickSticky(r, pool)
		if err != nil {
			t.Fatalf("%s: PickSticky() error = %v", tt.name, err)
		}
		want := pool[0] // where the fallback policy sends everyone
		if tt.pinned {
			want = pool[2]
		}
		if in != want || (setCookie == nil) != tt.pinned {
			t.Errorf("%s: PickSticky() = %v, new pin %v; want %v, new pin %v", tt.name, in, setCookie != nil, want, !tt.pinned)
		}
	}
}

func TestNewCookieSticky(t *testing.T) {
	for _, secret := range [][]byte{nil, []byte("short")} {
		if _, err := NewCookieSticky(nil, CookieSettings{Secret: secret}); !errors.Is(err, ErrCookieSecret) {
			t.Errorf("NewCookieSticky(secret of %d bytes) error = %v, want ErrCookieSecret", len(secret), err)
		}
	}
	secret := []byte("0123456789abcdef")
	s, err := NewCookieSticky(nil, CookieSettings{Secret: secret, Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	secret[0] = 'X' // the caller's slice is copied
	_, c, err := s.PickSticky(nil, makePool(t, 2))
	if err != nil || c == nil || c.Name != "gw_sticky" || !c.Secure || c.MaxAge != 86400 {
		t.Fatalf("PickSticky() cookie = %v, %v; want gw_sticky, Secure, Max-Age=86400", c, err)
	}
	if got := s.secret[0]; got != '0' {
		t.Errorf("secret changed with the caller's slice")
	}
	// Errors of the wrapped policy pass through.
	all := makePool(t, 2)
	for _, in := range all {
		in.SetFlag(Ejected, true)
	}
	if _, c, err := s.PickSticky(nil, all); !errors.Is(err, ErrNoInstance) || c != nil {
		t.Errorf("PickSticky(no instance available) = %v, %v; want no cookie, ErrNoInstance", c, err)
	}
}

func FuzzCookieSticky(f *testing.F) {
	clk := newTestClock()
	pool := makePool(f, 3)
	s, err := NewCookieSticky(firstAvailable{}, CookieSettings{Name: "pin", Secret: testSecret, Now: clk.Now})
	if err != nil {
		f.Fatal(err)
	}
	valid := s.cookie(s.idsFor(pool).ids[1], clk.Now()).Value
	f.Add("pin=" + valid)
	f.Add("a=1; pin=" + valid + "; b=2")
	f.Add(`pin="` + valid + `"`)
	f.Add("pin=" + strings.Replace(valid, ".", "..", 1))
	f.Add(";;;=;pin;pin=;=")
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Cookie"] = []string{header}
		in, setCookie, err := s.PickSticky(r, pool)
		if err != nil || in == nil {
			t.Fatalf("PickSticky(%q) = %v, %v", header, in, err)
		}
		// Only the genuine cookie can pin; anything else is re-pinned.
		if setCookie == nil && !strings.Contains(header, valid) {
			t.Fatalf("PickSticky(%q) honoured a cookie that was never issued", header)
		}
		if setCookie == nil && in != pool[1] {
			t.Fatalf("PickSticky(%q) = %v without a new pin, want the pinned %v", header, in, pool[1])
		}
	})
}

func TestCutCookie(t *testing.T) {
	tests := []struct{ line, name, value, rest string }{
		{"a=b", "a", "b", ""},
		{" a=b ; c=d", "a", "b", " c=d"},
		{`a="q v"; x`, "a", "q v", " x"},
		{"novalue; a=b", "", "", " a=b"},
		{"a==b", "a", "=b", ""},
		{"", "", "", ""},
		{`a="`, "a", `"`, ""},
	}
	for _, tt := range tests {
		n, v, r := cutCookie(tt.line)
		if n != tt.name || v != tt.value || r != tt.rest {
			t.Errorf("cutCookie(%q) = %q, %q, %q; want %q, %q, %q", tt.line, n, v, r, tt.name, tt.value, tt.rest)
		}
	}
}

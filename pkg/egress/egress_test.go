package egress_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
)

func mustNew(t *testing.T, cfg egress.Config) *egress.Policy {
	t.Helper()
	p, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheck(t *testing.T) {
	t.Parallel()
	def := mustNew(t, egress.Config{})
	opened := mustNew(t, egress.Config{Allow: "127.0.0.0/8, 10.1.0.0/16, ci.example.com, *.svc.cluster.local, 127.0.0.1:8080, nats.example.com:8222", Deny: "10.1.2.0/24"}).
		Protect("127.0.0.1:8080", ":9090", "nats.internal:14222")
	tests := []struct {
		name   string
		p      *egress.Policy
		host   string
		addr   string
		reason string // "" = allowed
	}{
		{"public", def, "", "93.184.216.34:443", ""},
		{"private range", def, "", "10.0.0.5:80", ""},
		{"loopback", def, "", "127.0.0.1:80", "loopback"},
		{"loopback by name", def, "localhost", "127.0.0.1:80", "loopback"},
		{"loopback v6", def, "", "[::1]:80", "loopback"},
		{"v4-mapped loopback", def, "", "[::ffff:127.0.0.1]:80", "loopback"},
		{"metadata", def, "", "169.254.169.254:80", "metadata"},
		{"metadata v6", def, "", "[fd00:ec2::254]:80", "metadata"},
		{"link-local", def, "", "169.254.10.1:80", "link-local"},
		{"link-local v6", def, "", "[fe80::1]:80", "link-local"},
		{"unspecified", def, "", "0.0.0.0:80", "unspecified"},
		{"this network", def, "", "0.1.2.3:80", "unspecified"},
		{"multicast", def, "", "224.0.0.1:80", "multicast"},
		{"broadcast", def, "", "255.255.255.255:80", "broadcast"},
		{"nats port", def, "", "93.184.216.34:4222", "NATS port"},
		{"nats monitoring port", def, "", "93.184.216.34:8222", "NATS port"},
		{"allowed cidr", opened, "", "127.0.0.1:3000", ""},
		{"allowed by name", opened, "ci.example.com", "127.0.0.2:80", ""},
		{"allowed by wildcard", opened, "api.prod.svc.cluster.local", "127.0.0.3:80", ""},
		{"wildcard is not the bare domain's parent", opened, "svc.cluster.local.evil.com", "169.254.1.1:80", "link-local"},
		{"deny beats allow", opened, "", "10.1.2.3:80", "CARAVAN_EGRESS_DENY"},
		{"allowed cidr outside deny", opened, "", "10.1.3.3:80", ""},
		{"own port stays refused in an allowed cidr", opened, "", "127.0.0.1:9090", "own listen address"},
		{"own port on any local address", opened, "", "0.0.0.0:9090", "own listen address"},
		{"own port elsewhere is not ours", opened, "", "93.184.216.34:9090", ""},
		{"exact pair opens own address", opened, "", "127.0.0.1:8080", ""},
		{"protected nats server by name", opened, "nats.internal", "10.9.9.9:14222", "NATS server"},
		{"nats port opened by pair", opened, "nats.example.com", "93.184.216.34:8222", ""},
		{"nats port opened for that host only", opened, "other.example.com", "93.184.216.34:8222", "NATS port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.p.Check(tt.host, netip.MustParseAddrPort(tt.addr))
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.reason != "" && err == nil:
				t.Fatal("allowed")
			case tt.reason != "":
				if !errors.Is(err, egress.ErrRefused) || !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), "CARAVAN_EGRESS_ALLOW") {
					t.Fatalf("error %q: want ErrRefused saying %q and how to open it", err, tt.reason)
				}
			}
		})
	}
}

func TestNilIsDefault(t *testing.T) {
	t.Parallel()
	var p *egress.Policy
	if err := p.Check("", netip.MustParseAddrPort("127.0.0.1:80")); !errors.Is(err, egress.ErrRefused) {
		t.Fatalf("nil policy allowed loopback: %v", err)
	}
	if p.Timeout() != egress.DefaultTimeout || p.MaxBytes() != egress.DefaultMaxBytes {
		t.Fatalf("defaults: %s %d", p.Timeout(), p.MaxBytes())
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg  egress.Config
		want string
	}{
		{egress.Config{Allow: "10.0.0.0/33"}, "CARAVAN_EGRESS_ALLOW"},
		{egress.Config{Allow: "not a host"}, "CARAVAN_EGRESS_ALLOW"},
		{egress.Config{Allow: "host:99999"}, "CARAVAN_EGRESS_ALLOW"},
		{egress.Config{Deny: "example.com"}, "CARAVAN_EGRESS_DENY"},
		{egress.Config{Timeout: -time.Second}, "CARAVAN_EGRESS_TIMEOUT"},
		{egress.Config{MaxBytes: -1}, "CARAVAN_EGRESS_MAX_BYTES"},
	} {
		if err := tt.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: got %v, want an error naming %s", tt.cfg, err, tt.want)
		}
	}
}

// TestClient sends real requests to loopback servers: the address is
// checked after name resolution, redirects are checked hop by hop, and
// bodies and time are bounded.
func TestClient(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 2048)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = io.WriteString(w, big)
		case "/chunked":
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, big)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "other") }))
	t.Cleanup(other.Close)
	redirect := httptest.NewServer(http.RedirectHandler(other.URL+"/", http.StatusFound))
	t.Cleanup(redirect.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	get := func(c *http.Client, url string) (string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	def := mustNew(t, egress.Config{})
	if _, err := get(def.Client(false), srv.URL); !errors.Is(err, egress.ErrRefused) {
		t.Fatalf("loopback by IP: %v", err)
	}
	if _, err := get(def.Client(false), "http://localhost:"+port); !errors.Is(err, egress.ErrRefused) {
		t.Fatalf("loopback by name (resolved, then refused): %v", err)
	}

	open := mustNew(t, egress.Config{Allow: "127.0.0.0/8", MaxBytes: 1024, Timeout: 500 * time.Millisecond})
	if body, err := get(open.Client(false), srv.URL); err != nil || body != "ok" {
		t.Fatalf("allowed CIDR: %q %v", body, err)
	}
	if _, err := get(open.Client(false), srv.URL+"/big"); !errors.Is(err, egress.ErrTooLarge) {
		t.Fatalf("body over the limit (Content-Length): %v", err)
	}
	if _, err := get(open.Client(false), srv.URL+"/chunked"); !errors.Is(err, egress.ErrTooLarge) {
		t.Fatalf("body over the limit (chunked): %v", err)
	}
	if _, err := get(open.Client(false), srv.URL+"/slow"); err == nil {
		t.Fatal("a request outlived the timeout")
	}

	byName := mustNew(t, egress.Config{Allow: "localhost"})
	if body, err := get(byName.Client(false), "http://localhost:"+port); err != nil || body != "ok" {
		t.Fatalf("allowed host name: %q %v", body, err)
	}

	// Only the redirecting server is open: the hop to the other is refused.
	hop := mustNew(t, egress.Config{Allow: redirect.Listener.Addr().String()})
	if _, err := get(hop.Client(false), redirect.URL); !errors.Is(err, egress.ErrRefused) {
		t.Fatalf("redirect to a refused address: %v", err)
	}
	// The server's own address stays closed in an allowed CIDR.
	own := mustNew(t, egress.Config{Allow: "127.0.0.0/8"}).Protect(srv.Listener.Addr().String())
	if _, err := get(own.Client(false), srv.URL); !errors.Is(err, egress.ErrRefused) || !strings.Contains(err.Error(), "own listen address") {
		t.Fatalf("own address: %v", err)
	}
	if body, err := get(own.AllowURL(srv.URL).Client(false), srv.URL); err != nil || body != "ok" {
		t.Fatalf("AllowURL: %q %v", body, err)
	}
}

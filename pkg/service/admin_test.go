package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/caravan-cd/caravan/pkg/service"
)

func TestAdminHandler(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	h := service.NewHealth()
	var broken error
	h.Add("nats", func(context.Context) error { return broken })
	srv := httptest.NewServer(service.AdminHandler(h, reg, false))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path string
		before     func()
		code       int
		body       string
	}{
		{"alive while starting", "/healthz", nil, 200, `"ok"`},
		{"not ready while starting", "/readyz", nil, 503, "starting"},
		{"ready once started", "/readyz", h.Started, 200, `"ok"`},
		{"a failing check names itself", "/readyz", func() { broken = errors.New("not connected") }, 503, `"failing":[{"check":"nats","reason":"not connected"}]`},
		{"each failing check is named", "/readyz", func() {
			h.Add("discovery leases", func(context.Context) error { return errors.New("heartbeat not renewed") })
		}, 503, "nats: not connected; discovery leases: heartbeat not renewed"},
		{"not ready while shutting down", "/readyz", func() { broken = nil; h.Stopping(); h.Started() }, 503, `"check":"stopping"`},
		{"metrics", "/metrics", nil, 200, "go_goroutines"},
		{"no pprof unless asked", "/debug/pprof/", nil, 404, ""},
	}
	for _, tc := range tests { // in order: each step builds on the last
		if tc.before != nil {
			tc.before()
		}
		code, body := get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: GET %s = %d %q, want %d containing %q", tc.name, tc.path, code, body, tc.code, tc.body)
		}
	}

	pp := httptest.NewServer(service.AdminHandler(h, nil, true))
	defer pp.Close()
	resp, err := http.Get(pp.URL + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("pprof asked for: %d", resp.StatusCode)
	}
}

func TestAdminConfigValidate(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{"": true, ":9090": true, "127.0.0.1:0": true, "9090": false} {
		err := service.AdminConfig{Addr: addr}.Validate()
		if (err == nil) != ok || err != nil && !strings.Contains(err.Error(), "CARAVAN_ADMIN_ADDR") {
			t.Errorf("Validate(%q) = %v", addr, err)
		}
	}
}

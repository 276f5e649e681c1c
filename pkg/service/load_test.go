package service_test

import (
	"os"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/service"
)

// Not parallel: it sets process environment variables.
func TestLoadReadsFullNamesOnly(t *testing.T) {
	t.Setenv("NATS_URL", "nats://unrelated:4222")
	t.Setenv("LOG_LEVEL", "debug")
	t.Setenv("ADMIN_ADDR", ":1")
	t.Setenv("CARAVAN_JS_REPLICAS", "3")
	var c service.Common
	if err := service.Load(&c); err != nil {
		t.Fatal(err)
	}
	if c.URL != "" || c.Level == "debug" {
		t.Errorf("unprefixed variables read: NATS URL %q, log level %q", c.URL, c.Level)
	}
	if c.Replicas != 3 || c.DataDir != "./.caravan" {
		t.Errorf("full names or defaults not read: replicas %d, data dir %q", c.Replicas, c.DataDir)
	}
	var a service.AdminConfig
	if err := service.Load(&a); err != nil || a.Addr != "" {
		t.Errorf("admin addr %q (%v), want unset", a.Addr, err)
	}
	if os.Getenv("NATS_URL") != "nats://unrelated:4222" {
		t.Error("the unprefixed variable was not put back")
	}
}

func TestRequireKey(t *testing.T) {
	t.Parallel()
	c := service.Common{DataDir: t.TempDir()}
	if err := service.RequireKey(c); err == nil || !strings.Contains(err.Error(), "CARAVAN_SECRET_KEY: required") {
		t.Fatalf("no key: err = %v", err)
	}
	c.SecretKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	if err := service.RequireKey(c); err != nil {
		t.Fatalf("with a key: %v", err)
	}
	c.SecretKey = "c2hvcnQ="
	if err := service.RequireKey(c); err == nil || !strings.Contains(err.Error(), "CARAVAN_SECRET_KEY") {
		t.Fatalf("short key: err = %v", err)
	}
}

package promoter

import (
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
)

func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("CARAVAN_GC_KEEP_FREIGHT", "5")
	t.Setenv("CARAVAN_HEALTH_INTERVAL", "10s")
	var c Config
	if err := envconfig.Process("CARAVAN", &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{Common: c.Common, LeaseTTL: 15 * time.Second, MaxConcurrent: 16, HealthInterval: 10 * time.Second,
		GCKeepPromotions: 20, GCKeepFreight: 5, GCMinAge: 14 * 24 * time.Hour, GCInterval: time.Hour, ControlFlowInterval: time.Minute,
		GitMirrorMaxBytes: 10 << 30, GitCacheMaxBytes: 32 << 20, ExternalURL: "http://127.0.0.1:8080", ArgoCDHealthSettle: 10 * time.Second}
	if c != want {
		t.Fatalf("config\n got %+v\nwant %+v", c, want)
	}
	if d := (Config{}).withDefaults(); d.ReplicaID == "" || d.LeaseTTL != want.LeaseTTL || d.GCKeepFreight != 20 {
		t.Fatalf("defaults %+v", d)
	}
	c.GCKeepPromotions = -1
	if c.Validate() == nil {
		t.Fatal("negative keep count accepted")
	}
	c.GCKeepPromotions = 20
	c.GitMirrorMaxBytes = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "CARAVAN_GIT_MIRROR_MAX_BYTES") {
		t.Fatalf("negative mirror budget: %v", err)
	}
}

package service_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/service"
)

// TestPermissionsTableInDocs keeps the table of docs/deploy.md true to
// service.NATSRules (the permissions the services' tests run under).
func TestPermissionsTableInDocs(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := service.Table(); !strings.Contains(string(b), want) {
		t.Errorf("docs/deploy.md: the NATS permissions table differs from service.NATSRules; write this one:\n%s", want)
	}
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	gw, err := service.Permissions("gateway")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := service.Permissions("promoter")
	if err != nil {
		t.Fatal(err)
	}
	all, err := service.Permissions("caravan")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		list []string
		sub  string
		want bool
	}{
		{"gateway publishes dry runs", gw.Publish, "caravan.promoter.dryrun", true},
		{"gateway does not answer them", gw.Subscribe, "caravan.promoter.dryrun", false},
		{"promoter answers dry runs", pr.Subscribe, "caravan.promoter.dryrun", true},
		{"promoter does not ask", pr.Publish, "caravan.promoter.dryrun", false},
		{"gateway claims no replica ID", gw.Subscribe, "caravan.replicas.>", false},
		{"all-in-one has everything", all.Subscribe, "caravan.discovery.forward.>", true},
		{"all-in-one runs setup", all.Publish, "$JS.API.>", true},
		{"gateway purges deleted projects' events", gw.Publish, "$JS.API.STREAM.PURGE.CARAVAN_EVENTS", true},
		{"promoter purges nothing", pr.Publish, "$JS.API.STREAM.PURGE.CARAVAN_EVENTS", false},
	} {
		if got := slices.Contains(c.list, c.sub); got != c.want {
			t.Errorf("%s: %v", c.name, got)
		}
	}
	if _, err := service.Permissions("nope"); err == nil {
		t.Error("unknown service: no error")
	}
}

// TestChartPermissionsFile keeps the Helm chart's NATS users true to
// service.NATSRules: the chart reads the file go generate writes.
func TestChartPermissionsFile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../deploy/helm/caravan/files/nats-permissions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(service.PermissionsYAML()) {
		t.Error("deploy/helm/caravan/files/nats-permissions.yaml is stale: run go generate ./service in pkg")
	}
}

// TestOnlySetupCreatesStreams: no service may create, update or delete a
// stream or bucket; caravan setup may.
func TestOnlySetupCreatesStreams(t *testing.T) {
	t.Parallel()
	for _, u := range service.Users {
		p, err := service.Permissions(u)
		if err != nil {
			t.Fatal(err)
		}
		var creates bool
		for _, s := range p.Publish {
			creates = creates || s == "$JS.API.>" || strings.HasPrefix(s, "$JS.API.STREAM.CREATE") || strings.HasPrefix(s, "$JS.API.STREAM.UPDATE") ||
				strings.HasPrefix(s, "$JS.API.STREAM.DELETE") || s == "$JS.API.STREAM.>"
		}
		if creates != (u == service.SetupUser) {
			t.Errorf("%s: may create streams: %v", u, creates)
		}
	}
}

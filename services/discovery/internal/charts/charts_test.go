package charts_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery/internal/charts"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

const index = `apiVersion: v1
entries:
  app:
  - name: app
    version: 1.2.0
  - name: app
    version: 1.10.0
  - name: app
    version: 2.0.0-beta.1
  - name: app
    version: 0.9.0
  other:
  - name: other
    version: 9.9.9
`

func TestHTTPRepository(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bot" || p != "pw" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/charts/index.yaml" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(index))
	}))
	t.Cleanup(srv.Close)
	c := charts.New(http.DefaultTransport, charts.InsecureTransport(), images.New(images.Options{}))
	cr := &creds.Credentials{Username: "bot", Password: "pw"}
	tests := []struct {
		sub  model.ChartSubscription
		want []string
	}{
		{model.ChartSubscription{Name: "app"}, []string{"2.0.0-beta.1", "1.10.0", "1.2.0", "0.9.0"}},
		{model.ChartSubscription{Name: "app", SemverConstraint: "^1.0.0"}, []string{"1.10.0", "1.2.0"}},
		{model.ChartSubscription{Name: "app", DiscoveryLimit: 1}, []string{"2.0.0-beta.1"}},
	}
	for _, tt := range tests {
		sub := tt.sub
		sub.RepoURL = srv.URL + "/charts/"
		res, err := c.Discover(t.Context(), sub, cr)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Versions, tt.want) {
			t.Errorf("%+v: %v, want %v", tt.sub, res.Versions, tt.want)
		}
	}
	_, err := c.Discover(t.Context(), model.ChartSubscription{RepoURL: srv.URL + "/charts", Name: "app"}, nil)
	if err == nil || !strings.Contains(charts.Explain(err), "cred-type=helm") {
		t.Fatalf("anonymous: %v", err)
	}
	_, err = c.Discover(t.Context(), model.ChartSubscription{RepoURL: srv.URL + "/charts", Name: "missing"}, cr)
	if err == nil {
		t.Fatal("missing chart: no error")
	}
}

func TestOCIRepository(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	for _, v := range []string{"0.1.0", "0.2.0", "1.0.0_build.1", "latest"} {
		reg.PushImage(t, "charts/app", v)
	}
	c := charts.New(http.DefaultTransport, charts.InsecureTransport(), images.New(images.Options{}))
	res, err := c.Discover(t.Context(), model.ChartSubscription{RepoURL: "oci://" + reg.Repo("charts/app"), SemverConstraint: "<1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Versions, []string{"0.2.0", "0.1.0"}) {
		t.Fatalf("versions %v", res.Versions)
	}
	res, err = c.Discover(t.Context(), model.ChartSubscription{RepoURL: "oci://" + reg.Repo("charts/app")}, nil)
	if err != nil || res.Versions[0] != "1.0.0+build.1" {
		t.Fatalf("versions %v, %v", res.Versions, err)
	}
}

// A repository with a certificate no authority signed answers only a
// subscription with insecureSkipTLSVerify.
func TestInsecureSkipTLSVerify(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(index))
	}))
	t.Cleanup(srv.Close)
	c := charts.New(http.DefaultTransport, charts.InsecureTransport(), images.New(images.Options{}))
	sub := model.ChartSubscription{RepoURL: srv.URL, Name: "other"}
	if _, err := c.Discover(t.Context(), sub, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("verified TLS: %v, want a certificate error", err)
	}
	sub.InsecureSkipTLSVerify = true
	res, err := c.Discover(t.Context(), sub, nil)
	if err != nil || !slices.Equal(res.Versions, []string{"9.9.9"}) {
		t.Fatalf("insecureSkipTLSVerify: %v %v", res.Versions, err)
	}
}

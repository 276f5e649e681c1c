package steps

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/egress"
)

// insecureSkipTLSVerify reaches servers whose certificate no CA vouches
// for (httptest's), through the egress policy; without it the request
// fails on the certificate.
func TestInsecureSkipTLSVerifyHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"token": "`+r.Header.Get("X-Token")+`"}`)
	}))
	t.Cleanup(srv.Close)

	cfg := map[string]any{"url": srv.URL, "headers": []any{map[string]any{"name": "X-Token", "value": "t-1"}},
		"outputs": []any{map[string]any{"name": "token", "fromExpression": "response.body.token"}}}
	sc := newContext(t, cfg)
	sc.Egress = allowLoopback(t, egress.Config{})
	if _, err := run(t, "http", sc); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("http without insecureSkipTLSVerify: %v", err)
	}
	cfg["insecureSkipTLSVerify"] = true
	res, err := run(t, "http", sc)
	if err != nil || res.Output["token"] != "t-1" {
		t.Fatalf("http with insecureSkipTLSVerify: %+v %v", res, err)
	}

	sc.Config = map[string]any{"url": srv.URL, "outPath": "token.json", "headers": []any{map[string]any{"name": "X-Token", "value": "t-2"}}}
	if _, err := run(t, "http-download", sc); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("http-download without insecureSkipTLSVerify: %v", err)
	}
	sc.Config["insecureSkipTLSVerify"] = true
	if _, err := run(t, "http-download", sc); err != nil {
		t.Fatal(err)
	}
	if got := files(t, sc, ".")["token.json"]; got != `{"token": "t-2"}` {
		t.Fatalf("downloaded %q", got)
	}
}

func TestInsecureSkipTLSVerifyOCI(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(registry.New())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	src, err := name.ParseReference(host + "/team/app:1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	insecure := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the test server's own certificate
	if err := remote.Write(src, img, remote.WithTransport(insecure)); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	second, err := layers[1].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(second)
	_ = second.Close()

	sc := newContext(t, map[string]any{"srcRef": host + "/team/app:1.0.0", "destRef": host + "/team/app:prod"})
	sc.Egress = allowLoopback(t, egress.Config{})
	if _, err := run(t, "oci-push", sc); err == nil {
		t.Fatal("oci-push without insecureSkipTLSVerify reached a server with an unknown certificate")
	}
	sc.Config["insecureSkipTLSVerify"] = true
	if res, err := run(t, "oci-push", sc); err != nil || res.Output["tag"] != "prod" {
		t.Fatalf("oci-push with insecureSkipTLSVerify: %+v %v", res, err)
	}

	sc.Config = map[string]any{"imageRef": host + "/team/app:prod", "outPath": "layer.tgz"}
	if _, err := run(t, "oci-download", sc); err == nil {
		t.Fatal("oci-download without insecureSkipTLSVerify reached a server with an unknown certificate")
	}
	// mediaType picks the layer; random layers share one media type, so
	// the first of it is written, and another type is none.
	mt, err := layers[0].MediaType()
	if err != nil {
		t.Fatal(err)
	}
	sc.Config = map[string]any{"imageRef": host + "/team/app:prod", "outPath": "layer.tgz", "insecureSkipTLSVerify": true,
		"mediaType": "application/vnd.example.none"}
	if _, err := run(t, "oci-download", sc); err == nil || !strings.Contains(err.Error(), "no layer of media type") {
		t.Fatalf("a media type no layer has: %v", err)
	}
	sc.Config["mediaType"] = string(mt)
	if _, err := run(t, "oci-download", sc); err != nil {
		t.Fatal(err)
	}
	first, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	wantFirst, _ := io.ReadAll(first)
	_ = first.Close()
	got, err := os.ReadFile(filepath.Join(sc.Workspace.Dir.Path(), "layer.tgz"))
	if err != nil || string(got) != string(wantFirst) || string(got) == string(want) {
		t.Fatalf("downloaded layer (%d bytes): %v", len(got), err)
	}
	// An existing file is replaced only with allowOverwrite.
	if _, err := run(t, "oci-download", sc); err == nil {
		t.Fatal("oci-download overwrote a file without allowOverwrite")
	}
	sc.Config["allowOverwrite"] = true
	if _, err := run(t, "oci-download", sc); err != nil {
		t.Fatalf("oci-download with allowOverwrite: %v", err)
	}
}

//go:build e2e

package testenv_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// The Debian docker-registry (a real server: make e2e) with token and
// htpasswd authentication: the
// configured user pushes and lists, a wrong password and anonymous
// requests are refused.
func TestDockerRegistryAuthE2E(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  testenv.DockerRegistryOption
	}{
		{"token", testenv.WithTokenAuth("robot", "s3cret-pw")},
		{"htpasswd", testenv.WithHtpasswd("robot", "s3cret-pw")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := testenv.StartDockerRegistry(t, tc.opt)
			digest := reg.PushImage(t, "team/app", "1.0.0")
			if tags := reg.Tags(t, "team/app"); len(tags) != 1 || tags[0] != "1.0.0" {
				t.Fatalf("tags %v", tags)
			}
			ref, err := name.ParseReference(reg.Repo("team/app")+":1.0.0", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			for _, auth := range []authn.Authenticator{authn.Anonymous, &authn.Basic{Username: "robot", Password: "wrong"}} {
				_, err := remote.Head(ref, remote.WithContext(t.Context()), remote.WithAuth(auth))
				var terr *transport.Error
				if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
					t.Errorf("%T: %v, want 401", auth, err)
				}
			}
			desc, err := remote.Head(ref, remote.WithContext(t.Context()), remote.WithAuth(reg.Auth()))
			if err != nil || desc.Digest != digest {
				t.Fatalf("head: %v %v, want %s", desc, err, digest)
			}
			if ts := reg.Tokens(); ts != nil {
				if issued, anonymous, refused := ts.Counts(); issued == 0 || anonymous == 0 || refused == 0 {
					t.Errorf("token server: %d issued, %d anonymous, %d refused", issued, anonymous, refused)
				}
			}
		})
	}
}

// The Debian docker-registry (make e2e) notifying an endpoint as the
// process-level suites run it: a push of a tag reaches the endpoint as a
// push event with the bearer token; at level error the registry logs
// nothing at level info, and what it logs is copied to the output given;
// after Stop it no longer answers.
func TestDockerRegistryNotificationsE2E(t *testing.T) {
	t.Parallel()
	pushed := make(chan string, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Events []struct {
				Action string
				Target struct{ Repository, Tag string }
			}
		}
		if r.Header.Get("Authorization") != "Bearer hook-secret" {
			t.Errorf("notification authorization %q", r.Header.Get("Authorization"))
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("notification: %v", err)
		}
		for _, e := range body.Events {
			if e.Action == "push" && e.Target.Tag != "" {
				pushed <- e.Target.Repository + ":" + e.Target.Tag
			}
		}
	}))
	t.Cleanup(hook.Close)
	var out testenv.SyncBuffer
	reg := testenv.StartDockerRegistry(t, testenv.WithNotifications(hook.URL, "hook-secret"),
		testenv.WithLogLevel("error"), testenv.WithLogOutput(&out))
	reg.PushImage(t, "team/app", "1.0.0")
	select {
	case got := <-pushed:
		if got != "team/app:1.0.0" {
			t.Errorf("pushed %s, want team/app:1.0.0", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no push event within 30s")
	}
	if log := reg.Log(); strings.Contains(log, "level=info") || out.String() != log {
		t.Errorf("log at level error:\n%s\ncopied:\n%s", log, out.String())
	}
	reg.Stop()
	reg.Stop()
	if resp, err := http.Get("http://" + reg.Host() + "/v2/"); err == nil {
		_ = resp.Body.Close()
		t.Errorf("the registry answers after Stop: %d", resp.StatusCode)
	}
}

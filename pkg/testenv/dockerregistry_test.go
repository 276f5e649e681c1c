//go:build e2e

package testenv_test

import (
	"errors"
	"net/http"
	"testing"

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

package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"

	"github.com/nats-io/nats.go/jetstream"
)

func TestAccountClaims(t *testing.T) {
	t.Parallel()
	got := AccountClaims(map[string]string{
		AnnotationClaims:                `{"groups":["devops","sre"],"email":["a@example.com"]}`,
		AnnotationClaimPrefix + "roles": "deployer, auditor",
		AnnotationSubjects:              "u1,u2",
		"unrelated":                     "x",
	})
	want := map[string]string{"groups": "devops,sre", "email": "a@example.com", "roles": "deployer,auditor", "sub": "u1,u2"}
	if len(got) != len(want) {
		t.Fatalf("claims %v", got)
	}
	for k, v := range want {
		if strings.Join(got[k], ",") != v {
			t.Errorf("%s: %v, want %s", k, got[k], v)
		}
	}
	if c := AccountClaims(map[string]string{AnnotationClaims: "not json"}); len(c) != 0 {
		t.Errorf("bad annotation: %v", c)
	}
}

func TestRoleFor(t *testing.T) {
	t.Parallel()
	sa := func(name, claims string) *model.ServiceAccount {
		return &model.ServiceAccount{ObjectMeta: model.ObjectMeta{Name: name, Namespace: "p", Annotations: map[string]string{AnnotationClaims: claims}}}
	}
	rb := func(sa, role, ns string) *model.RoleBinding {
		return &model.RoleBinding{Subjects: []model.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}, RoleRef: model.RoleRef{Name: role}}
	}
	accounts := []*model.ServiceAccount{sa("dev", `{"groups":["dev"]}`), sa("ops", `{"groups":["ops"]}`), sa("me", `{"sub":["me"]}`)}
	bindings := []*model.RoleBinding{rb("dev", KargoViewer, "p"), rb("ops", KargoAdmin, ""), rb("me", KargoPromoter, "p"), rb("dev", "cluster-admin", "p"), rb("me", KargoAdmin, "elsewhere")}
	tests := []struct {
		claims map[string]any
		want   Role
	}{
		{map[string]any{"groups": []any{"dev"}}, RoleViewer},
		{map[string]any{"groups": []any{"dev", "ops"}}, RoleAdmin},
		{map[string]any{"sub": "me"}, RolePromoter},
		{map[string]any{"sub": "me", "groups": []any{"dev"}}, RolePromoter},
		{map[string]any{"groups": "ops"}, RoleAdmin},
		{map[string]any{"groups": []any{"nobody"}}, RoleNone},
		{map[string]any{}, RoleNone},
	}
	for _, tt := range tests {
		if got := RoleFor("p", tt.claims, accounts, bindings); got != tt.want {
			t.Errorf("RoleFor(%v) = %s, want %s", tt.claims, got, tt.want)
		}
	}
}

func TestParseRole(t *testing.T) {
	t.Parallel()
	for _, r := range []Role{RoleViewer, RolePromoter, RoleAdmin} {
		b, _ := r.MarshalText()
		var back Role
		if err := back.UnmarshalText(b); err != nil || back != r {
			t.Errorf("round trip %s: %s %v", r, back, err)
		}
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("root accepted")
	}
}

func TestTokensStore(t *testing.T) {
	t.Parallel()
	nc := testenv.NATS(t).Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := state.Setup(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, string(state.Tokens))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	live := map[string]LiveProject{"p.x": {UID: "uid-1", Created: time.Now().Add(-time.Hour)}}
	toks := NewTokens(kv, func(_ context.Context, project string) (LiveProject, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		p, ok := live[project]
		return p, ok, nil
	})
	setProject := func(p *LiveProject) {
		mu.Lock()
		defer mu.Unlock()
		if p == nil {
			delete(live, "p.x")
		} else {
			live["p.x"] = *p
		}
	}
	tok, secret, err := toks.Create(ctx, "p.x", "ci", RolePromoter, "admin", time.Now())
	if err != nil || tok.SHA256 != "" || !strings.HasPrefix(secret, TokenPrefix) {
		t.Fatalf("create: %+v %q %v", tok, secret, err)
	}
	if _, _, err := toks.Create(ctx, "p.x", "ci", RoleViewer, "admin", time.Now()); !errors.Is(err, ErrTokenExists) {
		t.Errorf("duplicate: %v", err)
	}
	p, err := toks.Authenticate(ctx, secret)
	if err != nil || p.Project != "p.x" || p.Role != RolePromoter || p.Admin {
		t.Errorf("authenticate: %+v %v", p, err)
	}
	e, _ := kv.Get(ctx, state.Key("p.x", "ci"))
	if strings.Contains(string(e.Value()), secret[strings.LastIndex(secret, ".")+1:]) {
		t.Error("the secret is stored in clear")
	}
	for _, bad := range []string{"", TokenPrefix, TokenPrefix + "a.b", secret + "x", strings.Replace(secret, "Y2k", "Y2o", 1), "cvn.!!.!!.x"} {
		if _, err := toks.Authenticate(ctx, bad); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("authenticate %q: %v", bad, err)
		}
	}
	if tok.ProjectUID != "uid-1" {
		t.Errorf("token project UID %q", tok.ProjectUID)
	}
	// The project deleted, then created again: the old token stays dead.
	setProject(nil)
	if _, err := toks.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("project gone: %v", err)
	}
	setProject(&LiveProject{UID: "uid-2", Created: time.Now()})
	if _, err := toks.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("project created again: %v", err)
	}
	if _, _, err := toks.Create(ctx, "nope", "ci", RoleViewer, "admin", time.Now()); !errors.Is(err, ErrNoProject) {
		t.Errorf("token in a missing project: %v", err)
	}
	// A token stored before tokens carried the UID is bound at first use,
	// unless it is older than the project.
	legacy := func(name string, created time.Time) string {
		if _, err := state.Put(ctx, kv, state.Key("p.x", name), Token{Name: name, Project: "p.x", Role: RoleViewer, CreatedAt: created, SHA256: hex.EncodeToString(sha256.New().Sum(nil))}); err != nil {
			t.Fatal(err)
		}
		return TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte("p.x")) + "." + base64.RawURLEncoding.EncodeToString([]byte(name)) + "."
	}
	if _, err := toks.Authenticate(ctx, legacy("old", time.Now().Add(-time.Hour))); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("legacy token older than the project: %v", err)
	}
	if _, err := toks.Authenticate(ctx, legacy("new", time.Now().Add(time.Minute))); err != nil {
		t.Errorf("legacy token: %v", err)
	}
	if bound, _, _ := state.Get[Token](ctx, kv, state.Key("p.x", "new")); bound.ProjectUID != "uid-2" {
		t.Errorf("legacy token bound to %q", bound.ProjectUID)
	}
	setProject(&LiveProject{UID: "uid-1", Created: time.Now().Add(-time.Hour)})
	if err := toks.Delete(ctx, "p.x", "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := toks.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("revoked: %v", err)
	}
	if err := toks.Delete(ctx, "p.x", "ci"); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("delete again: %v", err)
	}
}

func TestChain(t *testing.T) {
	t.Parallel()
	c := Chain{Admin: NewStaticToken("adm")}
	if p, err := c.Authenticate(context.Background(), "adm"); err != nil || !p.Admin {
		t.Errorf("admin: %+v %v", p, err)
	}
	for _, tok := range []string{"", "eyJa.b.c", TokenPrefix + "x.y.z"} {
		if _, err := c.Authenticate(context.Background(), tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%q: %v", tok, err)
		}
	}
}

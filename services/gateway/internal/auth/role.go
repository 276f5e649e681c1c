package auth

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Role is what a principal may do in one project. Each role includes the
// ones below it.
type Role int

// Roles, after Kargo's kargo-viewer, kargo-promoter and kargo-admin.
const (
	// RoleNone may do nothing in the project.
	RoleNone Role = iota
	// RoleViewer reads everything but secret values.
	RoleViewer
	// RolePromoter also promotes, approves, refreshes, re-verifies, aborts
	// and resumes auto-promotion.
	RolePromoter
	// RoleAdmin also applies and deletes the project's resources and
	// manages its API tokens.
	RoleAdmin
)

var roleNames = map[Role]string{RoleNone: "none", RoleViewer: "viewer", RolePromoter: "promoter", RoleAdmin: "admin"}

func (r Role) String() string {
	if n, ok := roleNames[r]; ok {
		return n
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// MarshalText writes the role's name.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a role name (viewer, promoter or admin).
func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ParseRole reads viewer, promoter or admin.
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return RoleViewer, nil
	case "promoter":
		return RolePromoter, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("role %q: want viewer, promoter or admin", s)
}

// Kargo's project roles, as a RoleBinding's roleRef names them.
const (
	KargoViewer   = "kargo-viewer"
	KargoPromoter = "kargo-promoter"
	KargoAdmin    = "kargo-admin"
)

var kargoRoles = map[string]Role{KargoViewer: RoleViewer, KargoPromoter: RolePromoter, KargoAdmin: RoleAdmin}

// Kargo's ServiceAccount annotations mapping OIDC claims to the account.
const (
	// AnnotationClaims holds a JSON object of claim name to accepted values,
	// e.g. {"groups":["devops"],"email":["a@example.com"]}.
	AnnotationClaims = "rbac.kargo.akuity.io/claims"
	// AnnotationClaimPrefix prefixes one claim's comma-separated values
	// (rbac.kargo.akuity.io/claim.groups).
	AnnotationClaimPrefix = "rbac.kargo.akuity.io/claim."
	// The older single-claim annotations, comma-separated.
	AnnotationSubjects = "rbac.kargo.akuity.io/sub"
	AnnotationEmails   = "rbac.kargo.akuity.io/email"
	AnnotationGroups   = "rbac.kargo.akuity.io/groups"
)

// AccountClaims returns the claims a ServiceAccount's annotations accept:
// claim name to values. An unparsable claims annotation is ignored.
func AccountClaims(annotations map[string]string) map[string][]string {
	out := map[string][]string{}
	add := func(claim, csv string) {
		for v := range strings.SplitSeq(csv, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out[claim] = append(out[claim], v)
			}
		}
	}
	for k, v := range annotations {
		switch {
		case k == AnnotationClaims:
			var m map[string][]string
			if json.Unmarshal([]byte(v), &m) == nil {
				for c, vs := range m {
					out[c] = append(out[c], vs...)
				}
			}
		case strings.HasPrefix(k, AnnotationClaimPrefix):
			add(strings.TrimPrefix(k, AnnotationClaimPrefix), v)
		case k == AnnotationSubjects:
			add("sub", v)
		case k == AnnotationEmails:
			add("email", v)
		case k == AnnotationGroups:
			add("groups", v)
		}
	}
	return out
}

// claimValues returns a token claim's values: a string, or the strings of
// a list.
func claimValues(v any) []string {
	switch c := v.(type) {
	case string:
		return []string{c}
	case []string:
		return c
	case []any:
		var out []string
		for _, x := range c {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Matches reports whether token claims match a ServiceAccount's accepted
// claims: some claim of the token has a value the account lists for it.
func Matches(claims map[string]any, accepted map[string][]string) bool {
	for name, values := range accepted {
		for _, have := range claimValues(claims[name]) {
			for _, want := range values {
				if have == want {
					return true
				}
			}
		}
	}
	return false
}

// RoleFor maps OIDC claims to a role in project the way Kargo does: the
// ServiceAccounts of the project whose claim annotations match the claims
// are the caller's; each RoleBinding of the project binding one of them to
// kargo-viewer, kargo-promoter or kargo-admin grants that role. The
// highest role granted wins.
func RoleFor(project string, claims map[string]any, accounts []*model.ServiceAccount, bindings []*model.RoleBinding) Role {
	mine := map[string]bool{}
	for _, sa := range accounts {
		if Matches(claims, AccountClaims(sa.Annotations)) {
			mine[sa.Name] = true
		}
	}
	role := RoleNone
	for _, rb := range bindings {
		granted, ok := kargoRoles[rb.RoleRef.Name]
		if !ok || granted <= role {
			continue
		}
		for _, sub := range rb.Subjects {
			if sub.Kind == "ServiceAccount" && mine[sub.Name] && (sub.Namespace == "" || sub.Namespace == project) {
				role = granted
				break
			}
		}
	}
	return role
}

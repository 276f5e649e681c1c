package model

import (
	"fmt"
	"net/mail"
	"strings"
)

// Caravan's own Git identity, the default of every project's.
const (
	DefaultGitAuthorName  = "Caravan"
	DefaultGitAuthorEmail = "no-reply@caravan.invalid"
	// DefaultGitBranchPrefix precedes a promotion's name in the branch
	// git-push generates.
	DefaultGitBranchPrefix = "caravan/promotion/"
)

// GitIdentity is who a project's promotions commit as, when a step names
// no author, and where git-push's generated branches go.
type GitIdentity struct {
	Name, Email  string
	BranchPrefix string
}

// GitIdentityFor is the Git identity of a project: its ProjectConfig's
// gitClient (a Caravan addition), else the ClusterConfig's gitClient (as
// Kargo), else Caravan's defaults; name and email are taken together.
// Either config may be nil.
func GitIdentityFor(pc *ProjectConfig, cc *ClusterConfig) GitIdentity {
	id := GitIdentity{Name: DefaultGitAuthorName, Email: DefaultGitAuthorEmail, BranchPrefix: DefaultGitBranchPrefix}
	if cc != nil && cc.Spec.GitClient != nil && cc.Spec.GitClient.Name != "" {
		id.Name, id.Email = cc.Spec.GitClient.Name, cc.Spec.GitClient.Email
	}
	if pc != nil && pc.Spec.GitClient != nil {
		g := pc.Spec.GitClient
		if g.Name != "" {
			id.Name, id.Email = g.Name, g.Email
		}
		if g.BranchPrefix != "" {
			id.BranchPrefix = g.BranchPrefix
		}
	}
	return id
}

// gitClient checks a Git identity: name and email together, an email
// address, and a branch prefix git accepts in a branch name.
func (v *validator) gitClient(field, name, email, prefix string) {
	switch {
	case name == "" && email != "", name != "" && email == "":
		v.add(field, "name and email must be set together")
	case strings.ContainsAny(name, "<>\n"):
		v.add(field+".name", "must not contain <, > or a newline")
	}
	if email != "" {
		if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
			v.add(field+".email", "%q is not an email address", email)
		}
	}
	if prefix != "" {
		if err := branchPrefixError(prefix); err != nil {
			v.add(field+".branchPrefix", "%v", err)
		}
	}
}

// branchPrefixError says why prefix cannot start a branch name (git
// check-ref-format's rules, for the part a prefix can break).
func branchPrefixError(prefix string) error {
	switch {
	case strings.HasPrefix(prefix, "/") || strings.HasPrefix(prefix, "-") || strings.HasPrefix(prefix, "."):
		return fmt.Errorf("%q must not start with a slash, a dash or a dot", prefix)
	case strings.Contains(prefix, "..") || strings.Contains(prefix, "//") || strings.Contains(prefix, "@{") || strings.Contains(prefix, "/."):
		return fmt.Errorf("%q must not contain .., //, /. or @{", prefix)
	case strings.ContainsAny(prefix, " ~^:?*[\\\t\n\x7f"):
		return fmt.Errorf("%q must not contain spaces or any of ~^:?*[\\", prefix)
	}
	return nil
}

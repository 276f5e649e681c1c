package model

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"unicode"
)

// RepoKind is the kind of repository a URL names: it decides which forms
// CheckRepoURL accepts.
type RepoKind string

// Repository kinds.
const (
	RepoGit   RepoKind = "git"
	RepoImage RepoKind = "image"
	RepoChart RepoKind = "chart"
)

// ErrRepoURL is wrapped by every error CheckRepoURL returns.
var ErrRepoURL = errors.New("repository URL refused")

var (
	// scpGitURL is "user@host:path", the form Kargo accepts (its user and
	// host patterns); go-git reads every string it matches as SSH.
	scpGitURL = regexp.MustCompile(`^([\w][\w.-]*)@([\w-]+(?:\.[\w-]+)*):([^\\].*)$`)
	hostLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$`)
	// imageRef is a registry reference: [host[:port]/]path[:tag][@digest],
	// path components as the distribution spec has them.
	imageRef = regexp.MustCompile(`^` +
		`(?:((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?)/)?` +
		`([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)` +
		`(?::[\w][\w.-]{0,127})?` +
		`(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,})?$`)
)

// CheckRepoURL is the repository URL policy: a repository is reached over
// the network, never on the server's own disk. It returns nil when repoURL
// has a form the server fetches from the network:
//
//   - git: https://, http:// or ssh:// with a host, or scp-style
//     user@host:path;
//   - image: a registry reference such as registry.example.com:5000/team/app
//     (an oci:// prefix is allowed, as the oci steps take one);
//   - chart: https://, http:// or oci:// with a host.
//
// Everything else (file://, other schemes and git remote helpers, absolute,
// relative and home-relative paths, names with spaces or control
// characters) is refused with an error wrapping ErrRepoURL. As no accepted
// form names a local path, no accepted URL resolves into the data dir.
//
// A password written in the URL (https://user:password@host/…), or an
// access token written as its user (https://ghp_…@github.com/…), is
// refused too, the error showing the URL with the credential masked: a repository
// URL is shown wherever its Freight, events, statuses and logs are, to
// everyone who may read the project, and credentials belong in a Secret.
func CheckRepoURL(kind RepoKind, repoURL string) error {
	if repoURL == "" {
		return fmt.Errorf("%w: must not be empty", ErrRepoURL)
	}
	if i := strings.IndexFunc(repoURL, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return fmt.Errorf("%w: %q contains a space or control character", ErrRepoURL, MaskCredentials(repoURL))
	}
	if shown := MaskCredentials(repoURL); shown != repoURL {
		cred := map[RepoKind]string{RepoGit: CredTypeGit, RepoImage: CredTypeImage, RepoChart: CredTypeHelm}[kind]
		return fmt.Errorf("%w: %s holds a password or an access token, which would show wherever the URL does (Freight, events, statuses, logs); "+
			"put the credentials in a Secret labelled %s: %s instead", ErrRepoURL, shown, LabelCredType, cred)
	}
	var err error
	switch kind {
	case RepoGit:
		err = checkGitURL(repoURL)
	case RepoImage:
		err = checkImageRef(repoURL)
	case RepoChart:
		err = checkChartURL(repoURL)
	default:
		err = fmt.Errorf("unknown repository kind %q", kind)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRepoURL, err)
	}
	return nil
}

func checkGitURL(s string) error {
	if scheme, ok := schemeOf(s); ok {
		switch scheme {
		case "https", "http", "ssh":
			return checkHostURL(s)
		}
		return fmt.Errorf("%q: scheme %s:// is not allowed; use https://, http://, ssh:// or user@host:path", s, scheme)
	}
	if m := scpGitURL.FindStringSubmatch(s); m != nil {
		if !validHost(m[2]) {
			return fmt.Errorf("%q: %q is not a host name", s, m[2])
		}
		return nil
	}
	return fmt.Errorf("%q is not a network URL (local paths are refused); use https://, http://, ssh:// or user@host:path", s)
}

func checkChartURL(s string) error {
	if scheme, ok := schemeOf(s); ok {
		switch scheme {
		case "https", "http":
			return checkHostURL(s)
		case "oci":
			if err := checkImageRef(s); err != nil {
				return err
			}
			return checkHostURL(s)
		}
		return fmt.Errorf("%q: scheme %s:// is not allowed; use https://, http:// or oci://", s, scheme)
	}
	return fmt.Errorf("%q is not a network URL (local paths are refused); use https://, http:// or oci://", s)
}

func checkImageRef(s string) error {
	ref := s
	if scheme, ok := schemeOf(s); ok {
		if scheme != "oci" {
			return fmt.Errorf("%q: scheme %s:// is not allowed for an image; write registry/repository (oci:// at most)", s, scheme)
		}
		ref = s[len("oci://"):]
	}
	m := imageRef.FindStringSubmatch(ref)
	if m == nil {
		return fmt.Errorf("%q is not an image reference such as registry.example.com/team/app (lower-case repository path)", s)
	}
	if host := m[1]; host != "" && !validHostPort(host) {
		return fmt.Errorf("%q: %q is not a registry host", s, host)
	}
	return nil
}

// tokenUser matches a user name that is an access token: GitHub's
// (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_) and GitLab's (glpat-), which
// both accept a token written as the URL's user.
var tokenUser = regexp.MustCompile(`^(gh[pousr]_|github_pat_|glpat-)[A-Za-z0-9_-]+$`)

// MaskCredentials returns s with the credential of its user info replaced by
// "***": the password ("scheme://user:password@host…"), or a user name
// that is an access token ("https://ghp_…@github.com/…"); s itself when it
// has none. It works on the text, so a URL that does not parse is masked
// too.
func MaskCredentials(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	rest := s[i+3:]
	authority := rest
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		authority = rest[:j]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	colon := strings.Index(authority[:at], ":")
	if colon < 0 {
		if tokenUser.MatchString(authority[:at]) {
			return s[:i+3] + "***" + rest[at:]
		}
		return s
	}
	return s[:i+3] + authority[:colon+1] + "***" + rest[at:]
}

// schemeOf returns the lower-cased scheme of s when s starts with
// "<scheme>://".
func schemeOf(s string) (string, bool) {
	i := strings.Index(s, "://")
	if i <= 0 {
		return "", false
	}
	scheme := strings.ToLower(s[:i])
	for j, r := range scheme {
		letter := r >= 'a' && r <= 'z'
		other := r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'
		if !letter && (j == 0 || !other) {
			return "", false
		}
	}
	return scheme, true
}

// checkHostURL checks that s parses as a URL with a host.
func checkHostURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q does not parse as a URL", s)
	}
	if u.Opaque != "" || u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if !validHostPort(u.Host) {
		return fmt.Errorf("%q: %q is not a host name or address", s, u.Host)
	}
	return nil
}

// validHostPort reports whether hp is host, host:port, [v6] or [v6]:port.
func validHostPort(hp string) bool {
	host, port := hp, ""
	if strings.HasPrefix(hp, "[") {
		end := strings.Index(hp, "]")
		if end < 0 {
			return false
		}
		host, port = hp[1:end], strings.TrimPrefix(hp[end+1:], ":")
		if hp[end+1:] != "" && !strings.HasPrefix(hp[end+1:], ":") {
			return false
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return false
		}
	} else {
		if i := strings.LastIndex(hp, ":"); i >= 0 {
			host, port = hp[:i], hp[i+1:]
			if port == "" {
				return false
			}
		}
		if !validHost(host) {
			return false
		}
	}
	for _, r := range port {
		if r < '0' || r > '9' {
			return false
		}
	}
	return len(port) <= 5
}

// validHost reports whether h is a DNS name (labels of letters, digits, '-'
// and '_', none starting or ending with '-') or an IPv4 address.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if !hostLabel.MatchString(label) {
			return false
		}
	}
	return true
}

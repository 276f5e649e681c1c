package model

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"
)

var scpLikeURL = regexp.MustCompile(`^((?:[\w-]+@)?[\w-]+(?:\.[\w-]+)*)(?::(.*))?$`)

// NormalizeGitURL returns the canonical form Kargo uses for a Git URL (in
// Freight IDs and comparisons): lower case, no whitespace, no user info for
// http(s), no trailing "/" or ".git", and scp-like "git@host:path" written as
// "ssh://git@host/path". URLs it cannot normalize come back cleaned only.
func NormalizeGitURL(repo string) string {
	repo = cleanURL(repo)
	if repo == "" {
		return repo
	}
	trim := func(p string) string {
		return strings.TrimSuffix(strings.TrimSuffix(p, "/"), ".git")
	}
	if strings.HasPrefix(repo, "http://") || strings.HasPrefix(repo, "https://") {
		u, err := parseQueryless(repo)
		if err != nil {
			return repo
		}
		u.User = nil
		u.Path = trim(u.Path)
		return u.String()
	}
	if strings.HasPrefix(repo, "ssh://") {
		u, err := parseQueryless(repo)
		if err != nil {
			return repo
		}
		u.Path = trim(u.Path)
		return u.String()
	}
	m := scpLikeURL.FindStringSubmatch(repo)
	if m == nil {
		return repo
	}
	p, err := url.Parse(m[2])
	if err != nil {
		return repo
	}
	p.Path = trim(p.Path)
	if p.Path == "" {
		return "ssh://" + m[1]
	}
	return fmt.Sprintf("ssh://%s/%s", m[1], p.String())
}

func parseQueryless(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if len(u.Query()) > 0 {
		return nil, fmt.Errorf("query parameters not permitted")
	}
	return u, nil
}

// cleanURL percent-decodes, lower-cases and removes all whitespace.
func cleanURL(s string) string {
	if decoded, err := url.PathUnescape(s); err == nil {
		s = decoded
	}
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || r == '\uFEFF' || r == '\u200B' || r == '\u00A0' {
			return -1
		}
		return r
	}, s)
}

// NormalizeChartURL returns the canonical form of a Helm chart repository
// URL: lower case, without an "oci://" prefix, and for registry references
// normalized as NormalizeImageURL does.
func NormalizeChartURL(repo string) string {
	return NormalizeImageURL(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(repo)), "oci://"))
}

// NormalizeImageURL returns the canonical form of an image repository:
// Docker Hub's hosts (docker.io, index.docker.io, registry-1.docker.io) and
// its "library/" prefix are dropped; other registries are kept as
// "<registry>/<repository>". Anything that is not an image reference (an
// http URL, say) is returned unchanged.
//
// Kargo parses with go-containerregistry; this is a dependency-free
// equivalent for well-formed references.
func NormalizeImageURL(repo string) string {
	if repo == "" || strings.Contains(repo, "://") || strings.ContainsAny(repo, " \t") {
		return repo
	}
	ref := repo
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i:], "/") {
		ref = ref[:i]
	}
	registry, rest := "index.docker.io", ref
	if i := strings.Index(ref, "/"); i >= 0 {
		first := ref[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" {
			registry, rest = first, ref[i+1:]
		}
	}
	if rest == "" || strings.HasSuffix(rest, "/") || strings.Contains(rest, "//") {
		return repo
	}
	if registry == "docker.io" {
		registry = "index.docker.io"
	}
	if registry == "index.docker.io" || registry == "registry-1.docker.io" {
		return strings.TrimPrefix(rest, "library/")
	}
	return registry + "/" + rest
}

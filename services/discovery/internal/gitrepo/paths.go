package gitrepo

import (
	"fmt"
	"regexp"
	"strings"
)

// pathMatcher matches a changed file against includePaths/excludePaths
// entries: "regex:" or "regexp:" a regular expression, "glob:" a glob
// ("*" within a directory, "**" across directories), anything else a path
// that matches itself and everything below it.
type pathMatcher struct {
	prefixes []string
	regexes  []*regexp.Regexp
}

func newPathMatcher(patterns []string) (*pathMatcher, error) {
	m := &pathMatcher{}
	for _, p := range patterns {
		switch {
		case strings.HasPrefix(p, "regex:"), strings.HasPrefix(p, "regexp:"):
			_, expr, _ := strings.Cut(p, ":")
			re, err := regexp.Compile(expr)
			if err != nil {
				return nil, fmt.Errorf("path pattern %q: %w", p, err)
			}
			m.regexes = append(m.regexes, re)
		case strings.HasPrefix(p, "glob:"):
			re, err := regexp.Compile(globToRegex(strings.TrimPrefix(p, "glob:")))
			if err != nil {
				return nil, fmt.Errorf("path pattern %q: %w", p, err)
			}
			m.regexes = append(m.regexes, re)
		default:
			m.prefixes = append(m.prefixes, strings.Trim(p, "/"))
		}
	}
	return m, nil
}

func (m *pathMatcher) empty() bool { return len(m.prefixes) == 0 && len(m.regexes) == 0 }

func (m *pathMatcher) match(path string) bool {
	for _, p := range m.prefixes {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	for _, re := range m.regexes {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

func globToRegex(glob string) string {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		c := glob[i]
		switch c {
		case '*':
			if i+1 < len(glob) && glob[i+1] == '*' {
				i++
				if i+1 < len(glob) && glob[i+1] == '/' {
					i++
					b.WriteString("(?:.*/)?")
				} else {
					b.WriteString(".*")
				}
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return b.String()
}

// selected applies Kargo's rule: a commit counts when one of its changed
// files is included (every file is, without includePaths) and not
// excluded.
func selected(files []string, include, exclude *pathMatcher) bool {
	for _, f := range files {
		if (include.empty() || include.match(f)) && !exclude.match(f) {
			return true
		}
	}
	return false
}

package images

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/caravan-cd/caravan/pkg/model"
)

// TagFilter holds a subscription's tag rules, compiled once.
type TagFilter struct {
	allow      []*regexp.Regexp
	ignore     []*regexp.Regexp
	ignoreTags map[string]bool
	constraint *semver.Constraints
	strict     bool
	semver     bool // tags must parse as semantic versions
}

// NewTagFilter compiles allowTags/allowTagsRegexes, ignoreTags/ignoreTagsRegexes
// and, for SemVer, the constraint. semverOnly makes every tag that is not a
// semantic version fail.
func NewTagFilter(allowTags string, allowRegex []string, ignoreTags, ignoreRegex []string, constraint string, strict, semverOnly bool) (*TagFilter, error) {
	f := &TagFilter{strict: strict, semver: semverOnly, ignoreTags: map[string]bool{}}
	allow := slices.Clone(allowRegex)
	if allowTags != "" {
		allow = append(allow, allowTags)
	}
	for _, expr := range allow {
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("allowTags %q: %w", expr, err)
		}
		f.allow = append(f.allow, re)
	}
	for _, expr := range ignoreRegex {
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("ignoreTagsRegexes %q: %w", expr, err)
		}
		f.ignore = append(f.ignore, re)
	}
	for _, t := range ignoreTags {
		f.ignoreTags[t] = true
	}
	if semverOnly && constraint != "" {
		c, err := semver.NewConstraint(constraint)
		if err != nil {
			return nil, fmt.Errorf("semver constraint %q: %w", constraint, err)
		}
		f.constraint = c
	}
	return f, nil
}

// Allowed reports whether tag passes the allow and ignore rules.
func (f *TagFilter) Allowed(tag string) bool {
	if f.ignoreTags[tag] {
		return false
	}
	for _, re := range f.ignore {
		if re.MatchString(tag) {
			return false
		}
	}
	if len(f.allow) == 0 {
		return true
	}
	for _, re := range f.allow {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}

// Version returns tag's semantic version when the tag passes the filter
// as one (and the constraint, when set).
func (f *TagFilter) Version(tag string) (*semver.Version, bool) {
	if !f.Allowed(tag) {
		return nil, false
	}
	v, ok := ParseSemver(tag, f.strict)
	if !ok {
		return nil, false
	}
	if f.constraint != nil && !f.constraint.Check(v) {
		return nil, false
	}
	return v, true
}

// ParseSemver parses tag as a semantic version with an optional leading
// "v". strict requires all of major.minor.patch; otherwise "1" and "1.2"
// are accepted as 1.0.0 and 1.2.0. It parses without regular expressions
// or formatting, which keeps selection over thousands of tags fast.
func ParseSemver(tag string, strict bool) (*semver.Version, bool) {
	s := strings.TrimPrefix(tag, "v")
	core := s
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		core = s[:i]
	}
	if core == "" {
		return nil, false
	}
	dots := strings.Count(core, ".")
	switch {
	case dots > 2, strict && dots != 2:
		return nil, false
	case dots < 2:
		s = core + strings.Repeat(".0", 2-dots) + s[len(core):]
	}
	v, err := semver.StrictNewVersion(s)
	if err != nil {
		return nil, false
	}
	return v, true
}

// Candidate is a tag that passed the filters, with its version for SemVer.
type Candidate struct {
	Tag     string
	Version *semver.Version
}

// SelectTags filters tags and orders them newest first for strategy:
// SemVer by version (higher first, ties by tag), Lexical by tag
// descending. NewestBuild and Digest order later, from image metadata.
func SelectTags(tags []string, f *TagFilter, strategy model.ImageSelectionStrategy) []Candidate {
	out := make([]Candidate, 0, len(tags))
	switch strategy {
	case model.ImageSelectionStrategySemVer:
		for _, t := range tags {
			if v, ok := f.Version(t); ok {
				out = append(out, Candidate{Tag: t, Version: v})
			}
		}
		// Sort pointer-free keys (no write barriers, integer compares);
		// only pre-releases of one version need Version.Compare.
		type key struct {
			major, minor, patch uint64
			release             bool
			i                   int32
		}
		keys := make([]key, len(out))
		for i, c := range out {
			keys[i] = key{c.Version.Major(), c.Version.Minor(), c.Version.Patch(), c.Version.Prerelease() == "", int32(i)}
		}
		slices.SortFunc(keys, func(a, b key) int {
			switch {
			case a.major != b.major:
				return cmp.Compare(b.major, a.major)
			case a.minor != b.minor:
				return cmp.Compare(b.minor, a.minor)
			case a.patch != b.patch:
				return cmp.Compare(b.patch, a.patch)
			case a.release != b.release:
				if a.release {
					return -1
				}
				return 1
			}
			ca, cb := out[a.i], out[b.i]
			if !a.release {
				if c := cb.Version.Compare(ca.Version); c != 0 {
					return c
				}
			}
			return strings.Compare(cb.Tag, ca.Tag)
		})
		sorted := make([]Candidate, len(out))
		for i, k := range keys {
			sorted[i] = out[k.i]
		}
		out = sorted
	default:
		for _, t := range tags {
			if f.Allowed(t) {
				out = append(out, Candidate{Tag: t})
			}
		}
		slices.SortFunc(out, func(a, b Candidate) int { return strings.Compare(b.Tag, a.Tag) })
	}
	return out
}

// Order sorts discovered references newest first for strategy.
func Order(refs []model.DiscoveredImageReference, strategy model.ImageSelectionStrategy, strict bool) {
	switch strategy {
	case model.ImageSelectionStrategySemVer:
		slices.SortStableFunc(refs, func(a, b model.DiscoveredImageReference) int {
			va, _ := ParseSemver(a.Tag, strict)
			vb, _ := ParseSemver(b.Tag, strict)
			if va != nil && vb != nil {
				if c := vb.Compare(va); c != 0 {
					return c
				}
			}
			return strings.Compare(b.Tag, a.Tag)
		})
	case model.ImageSelectionStrategyNewestBuild:
		slices.SortStableFunc(refs, func(a, b model.DiscoveredImageReference) int {
			if c := cmp.Compare(unix(b.CreatedAt), unix(a.CreatedAt)); c != 0 {
				return c
			}
			return strings.Compare(b.Tag, a.Tag)
		})
	case model.ImageSelectionStrategyLexical:
		slices.SortStableFunc(refs, func(a, b model.DiscoveredImageReference) int { return strings.Compare(b.Tag, a.Tag) })
	}
}

func unix(t *model.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixNano()
}

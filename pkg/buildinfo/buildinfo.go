// Package buildinfo says which build of Caravan is running: the module
// version and the VCS revision the Go toolchain stamps into every binary
// (runtime/debug), so `caravan version` and GET /version need no ldflags.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version overrides the module version when set at build time with
// -ldflags "-X github.com/caravan-cd/caravan/pkg/buildinfo.Version=v1.2.3".
var Version = ""

// Info describes a build.
type Info struct {
	// Version is the module version (a tag or pseudo-version), or "dev"
	// for a build from a work tree.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from ("" when the
	// build had no VCS information).
	Revision string `json:"revision,omitempty"`
	// Time is the commit time (RFC 3339).
	Time string `json:"time,omitempty"`
	// Modified is true when the work tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"goVersion"`
}

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: firstOf(Version, "dev")}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Version: Version, GoVersion: bi.GoVersion}
	if info.Version == "" {
		info.Version = bi.Main.Version
	}
	if info.Version == "" || info.Version == "(devel)" {
		info.Version = "dev"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is one line: "v1.2.3 (abc1234def56, 2026-01-02T03:04:05Z, modified, go1.26.8)".
func (i Info) String() string {
	var parts []string
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		parts = append(parts, rev)
	}
	if i.Time != "" {
		parts = append(parts, i.Time)
	}
	if i.Modified {
		parts = append(parts, "modified")
	}
	if i.GoVersion != "" {
		parts = append(parts, i.GoVersion)
	}
	if len(parts) == 0 {
		return i.Version
	}
	return i.Version + " (" + strings.Join(parts, ", ") + ")"
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

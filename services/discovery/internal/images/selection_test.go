package images

import (
	"testing"
)

func TestParseSemver(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tag    string
		strict bool
		want   string // "" when not a version
	}{
		{"v1.2.3", true, "1.2.3"},
		{"1.2.3-rc.1+build.5", true, "1.2.3-rc.1+build.5"},
		{"1.2", true, ""},
		{"1.2", false, "1.2.0"},
		{"v1", false, "1.0.0"},
		{"01.2.3", true, ""},
		{"1.2.3-", true, ""},
		{"1.2.3+", true, ""},
		{"1.2.3-01", true, ""},
		{"latest", false, ""},
		{"1.2.3.4", false, ""},
	}
	for _, tt := range tests {
		v, ok := ParseSemver(tt.tag, tt.strict)
		got := ""
		if ok {
			got = v.String()
		}
		if got != tt.want {
			t.Errorf("ParseSemver(%q, %t) = %q, want %q", tt.tag, tt.strict, got, tt.want)
		}
	}
}

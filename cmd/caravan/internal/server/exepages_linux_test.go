//go:build linux

package server

import (
	"os"
	"testing"
)

// parseSmaps reads each mapping's range, permissions, path and anonymous
// pages; a mapping without an Anonymous line counts as holding some.
func TestParseSmaps(t *testing.T) {
	t.Parallel()
	in := `00400000-019aa000 r--p 00000000 fe:00 10772485                           /tmp/my caravan
Size:              21160 kB
Rss:                3604 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
0780e000-0780f000 r--p 0740e000 fe:00 10772485                           /tmp/my caravan
Rss:                   4 kB
Anonymous:             4 kB
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                                  [vdso]
Rss:                   8 kB
c000000000-c000400000 rw-p 00000000 00:00 0 
`
	got := parseSmaps([]byte(in))
	want := []mapping{
		{start: 0x400000, end: 0x19aa000, perms: "r--p", path: "/tmp/my caravan", anonKiB: 0},
		{start: 0x780e000, end: 0x780f000, perms: "r--p", path: "/tmp/my caravan", anonKiB: 4},
		{start: 0x7ffd1000, end: 0x7ffd3000, perms: "r-xp", path: "[vdso]", anonKiB: -1},
		{start: 0xc000000000, end: 0xc000400000, perms: "rw-p", path: "", anonKiB: -1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings: %+v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Releasing the test binary's own pages unmaps its read-only mappings and
// leaves the process running: the code and data it uses afterwards are
// mapped back from the file.
func TestReleaseExecutablePages(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		n, err := releaseExecutablePages()
		if err != nil {
			t.Fatal(err)
		}
		if n <= 0 {
			t.Fatalf("released %d bytes of %s", n, exe)
		}
	}
	// Still running: read-only data and code are read back.
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range parseSmaps(smaps) {
		if m.path == exe && m.perms == "r-xp" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no executable mapping of %s after the release", exe)
	}
}

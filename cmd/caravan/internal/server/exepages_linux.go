//go:build linux

package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseExecutablePages unmaps the pages of the executable that the
// process mapped while starting and lets the kernel map back only those
// it touches afterwards, one page at a time.
//
// Why: the binary is large (over 100 MB with the Kubernetes and cloud
// clients), and a kernel with large page-cache folios and a large
// read-ahead (8 MiB on virtio disks) reads the executable in big folios
// and maps whole folios on a fault, so that running a few functions of
// each package at start-up left most of the binary mapped: about 95 MiB of
// the server's RSS was file pages of its own executable, most never
// touched again. Those pages are clean (the kernel can drop them at will),
// but they count in RSS and in a container's memory as long as they are
// mapped.
//
// How: for every read-only mapping of the executable that holds no
// anonymous (copied-on-write) page, so that dropping it loses nothing,
// madvise(MADV_RANDOM) turns read-ahead off, madvise(MADV_PAGEOUT)
// reclaims its pages folio by folio (unmapped and dropped from the page
// cache at once, so that a thread running the code in a folio rarely
// faults it back in between), and madvise(MADV_DONTNEED) unmaps what is
// left; then posix_fadvise(POSIX_FADV_DONTNEED) drops the file's other
// cached pages, so that the pages faulted back in are single pages, not
// large folios. Without MADV_PAGEOUT (Linux before 5.4), a binary already
// in the page cache when the server started (just built or unpacked) kept
// about 13 MiB more mapped: the folios of the hottest code, faulted back
// in by other threads between madvise and fadvise, stayed whole. Pages
// another process maps (a second caravan running the same file) stay
// cached and are mapped whole again. caravan server releases once at
// start and once more when its services are ready, which drops the pages
// only starting them needed. It returns how many bytes were unmapped.
func releaseExecutablePages() (int64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("release executable pages: %w", err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("release executable pages: %w", err)
	}
	var released int64
	var errs []error
	for _, m := range parseSmaps(smaps) {
		if m.path != exe || strings.Contains(m.perms, "w") || m.anonKiB != 0 {
			continue
		}
		length := m.end - m.start
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_PAGEOUT, unix.MADV_DONTNEED} {
			_, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, length, uintptr(advice))
			if advice == unix.MADV_PAGEOUT && errors.Is(e, unix.EINVAL) {
				continue // before Linux 5.4: MADV_DONTNEED alone
			}
			if e != 0 {
				errs = append(errs, fmt.Errorf("madvise %x-%x: %w", m.start, m.end, e))
			}
		}
		released += int64(length)
	}
	if released > 0 {
		f, err := os.Open(exe)
		if err != nil {
			errs = append(errs, err)
		} else {
			if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
				errs = append(errs, fmt.Errorf("fadvise %s: %w", exe, err))
			}
			_ = f.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return released, fmt.Errorf("release executable pages: %w", err)
	}
	return released, nil
}

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	start, end uintptr
	perms      string
	path       string
	anonKiB    int64
}

// parseSmaps reads the mappings of /proc/<pid>/smaps: a header line
// ("start-end perms offset dev inode [path]") followed by "Key: value"
// lines, of which only Anonymous is kept.
func parseSmaps(data []byte) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok && len(out) > 0 {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				n = -1 // unknown: treated as holding anonymous pages
			}
			out[len(out)-1].anonKiB = n
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok || len(fields) < 5 {
			continue // a "Key: value" line
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := mapping{start: uintptr(start), end: uintptr(end), perms: fields[1], anonKiB: -1}
		if len(fields) >= 6 {
			m.path = strings.Join(fields[5:], " ")
		}
		out = append(out, m)
	}
	return out
}
